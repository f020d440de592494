//! Tasks, task agents, grants, just-in-time grant requests and risk scores. One SQL text for
//! both backends, as in `rebac.rs`.

/// A task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Its id.
    pub id: String,
    /// Its type, e.g. `patch_bug`.
    pub kind: String,
    /// The human who owns it.
    pub owner: String,
    /// The resources it is about (JSON array of `type:id`).
    pub resources: String,
    /// Attributes policies see (JSON object).
    pub attributes: String,
    /// When it ends by itself, ms.
    pub deadline_ms: i64,
    /// `open`, `completed`, `failed`, `cancelled` or `expired`.
    pub state: String,
    /// Created, ms.
    pub created_ms: i64,
    /// Who created it (ledger actor).
    pub created_by: String,
    /// When it ended, ms.
    pub ended_ms: Option<i64>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Whether what it carried (grants, leases) has been ended since it ended.
    pub cleaned: bool,
}

/// An agent assigned to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAgentRow {
    /// The task.
    pub task: String,
    /// The agent's SPIFFE ID.
    pub agent: String,
    /// Its role in the task, e.g. `coder`.
    pub role: String,
    /// When, ms.
    pub assigned_ms: i64,
    /// Who.
    pub assigned_by: String,
}

/// A grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    /// Its id.
    pub id: String,
    /// The task it belongs to.
    pub task: String,
    /// The agent's SPIFFE ID.
    pub agent: String,
    /// `type:id` of the resource.
    pub resource: String,
    /// The permission (a relation of the resource's type).
    pub permission: String,
    /// When it ends, ms (never past the task's deadline).
    pub expires_ms: i64,
    /// `active` or `ended`.
    pub state: String,
    /// `assignment` or `request:<id>`.
    pub source: String,
    /// Created, ms.
    pub created_ms: i64,
    /// Who.
    pub created_by: String,
    /// Ended, ms.
    pub ended_ms: Option<i64>,
}

/// A just-in-time grant request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequestRow {
    /// Its id.
    pub id: String,
    /// The task.
    pub task: String,
    /// The asking agent.
    pub agent: String,
    /// `type:id`.
    pub resource: String,
    /// The permission asked for.
    pub permission: String,
    /// The agent's reason.
    pub reason: String,
    /// Lifetime asked for, seconds.
    pub ttl_s: i64,
    /// `pending`, `allowed`, `approved`, `denied` or `expired`.
    pub state: String,
    /// The policy decision that classified it.
    pub decision_id: String,
    /// Asked, ms.
    pub created_ms: i64,
    /// When a pending request times out (denied), ms.
    pub expires_ms: i64,
    /// The approver (or `policy`).
    pub decided_by: Option<String>,
    /// When, ms.
    pub decided_ms: Option<i64>,
    /// The approver's reason.
    pub decision_reason: Option<String>,
    /// The grant it produced.
    pub grant_id: Option<String>,
}

/// An operator-set risk score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskRow {
    /// The agent's SPIFFE ID.
    pub agent: String,
    /// Per mille, 0-1000.
    pub score_milli: i64,
    /// Why.
    pub reason: String,
    /// When, ms.
    pub set_ms: i64,
    /// Who.
    pub set_by: String,
}

pub(crate) const TASK_COLUMNS: &str = "id, kind, owner, resources, attributes, deadline_ms, state, \
     created_ms, created_by, ended_ms, end_reason, cleaned";
pub(crate) type RawTask = (
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    String,
    Option<i64>,
    Option<String>,
    i64,
);
pub(crate) fn task(r: RawTask) -> TaskRow {
    let (
        id,
        kind,
        owner,
        resources,
        attributes,
        deadline_ms,
        state,
        created_ms,
        created_by,
        ended_ms,
        end_reason,
        cleaned,
    ) = r;
    TaskRow {
        id,
        kind,
        owner,
        resources,
        attributes,
        deadline_ms,
        state,
        created_ms,
        created_by,
        ended_ms,
        end_reason,
        cleaned: cleaned != 0,
    }
}

pub(crate) const GRANT_COLUMNS: &str = "id, task, agent, resource, permission, expires_ms, state, \
     source, created_ms, created_by, ended_ms";
pub(crate) type RawGrant = (
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    String,
    Option<i64>,
);
pub(crate) fn grant(r: RawGrant) -> GrantRow {
    let (
        id,
        task,
        agent,
        resource,
        permission,
        expires_ms,
        state,
        source,
        created_ms,
        created_by,
        ended_ms,
    ) = r;
    GrantRow {
        id,
        task,
        agent,
        resource,
        permission,
        expires_ms,
        state,
        source,
        created_ms,
        created_by,
        ended_ms,
    }
}

pub(crate) const REQUEST_COLUMNS: &str = "id, task, agent, resource, permission, reason, ttl_s, \
     state, decision_id, created_ms, expires_ms, decided_by, decided_ms, decision_reason, grant_id";
pub(crate) type RawRequest = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);
pub(crate) fn request(r: RawRequest) -> GrantRequestRow {
    let (
        id,
        task,
        agent,
        resource,
        permission,
        reason,
        ttl_s,
        state,
        decision_id,
        created_ms,
        expires_ms,
        decided_by,
        decided_ms,
        decision_reason,
        grant_id,
    ) = r;
    GrantRequestRow {
        id,
        task,
        agent,
        resource,
        permission,
        reason,
        ttl_s,
        state,
        decision_id,
        created_ms,
        expires_ms,
        decided_by,
        decided_ms,
        decision_reason,
        grant_id,
    }
}

/// What one retention pass of [`TaskStore::task_purge_ended`](crate::TaskStore) deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskPurge {
    /// Ended tasks (their agent assignments go with them).
    pub tasks: u64,
    /// Ended grants.
    pub grants: u64,
    /// Grant requests no longer pending.
    pub requests: u64,
}

/// Implements `TaskStore` for a backend whose pool is `self.pool`.
macro_rules! task_methods {
    ($store:ty) => {
    #[async_trait::async_trait]
    impl crate::TaskStore for $store {
        async fn task_insert(&self, t: &crate::TaskRow) -> crate::Result<bool> {
            let (_gate, mut tx) = self.begin_write().await?;
            let n = sqlx::query(&format!(
                "INSERT INTO tasks ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT DO NOTHING",
                crate::tasks::TASK_COLUMNS
            ))
            .bind(&t.id)
            .bind(&t.kind)
            .bind(&t.owner)
            .bind(&t.resources)
            .bind(&t.attributes)
            .bind(t.deadline_ms)
            .bind(&t.state)
            .bind(t.created_ms)
            .bind(&t.created_by)
            .bind(t.ended_ms)
            .bind(&t.end_reason)
            .bind(i64::from(t.cleaned))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            if n > 0 {
                let change = crate::changes::Change::put(crate::ChangeKind::Task, &t.id);
                Self::note(&mut tx, &[change]).await?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(n > 0)
        }

        async fn task_get(&self, id: &str) -> crate::Result<Option<crate::TaskRow>> {
            let raw: Option<crate::tasks::RawTask> = sqlx::query_as(&format!(
                "SELECT {} FROM tasks WHERE id = $1",
                crate::tasks::TASK_COLUMNS
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raw.map(crate::tasks::task))
        }

        async fn task_list(
            &self,
            state: Option<&str>,
            agent: Option<&str>,
            limit: u32,
        ) -> crate::Result<Vec<crate::TaskRow>> {
            let raws: Vec<crate::tasks::RawTask> = sqlx::query_as(&format!(
                "SELECT {} FROM tasks t WHERE ($1 IS NULL OR t.state = $1) AND ($2 IS NULL OR \
                 EXISTS (SELECT 1 FROM task_agents a WHERE a.task = t.id AND a.agent = $2)) \
                 ORDER BY t.created_ms DESC, t.id LIMIT $3",
                crate::tasks::TASK_COLUMNS
            ))
            .bind(state)
            .bind(agent)
            .bind(i64::from(limit.min(1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::tasks::task).collect())
        }

        async fn task_end(
            &self,
            id: &str,
            state: &str,
            reason: &str,
            now_ms: i64,
        ) -> crate::Result<Option<crate::TaskRow>> {
            let (_gate, mut tx) = self.begin_write().await?;
            let raw: Option<crate::tasks::RawTask> = sqlx::query_as(&format!(
                "UPDATE tasks SET state = $2, end_reason = $3, ended_ms = $4 \
                 WHERE id = $1 AND state = 'open' RETURNING {}",
                crate::tasks::TASK_COLUMNS
            ))
            .bind(id)
            .bind(state)
            .bind(reason)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if raw.is_some() {
                let change = crate::changes::Change::put(crate::ChangeKind::Task, id);
                Self::note(&mut tx, &[change]).await?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(raw.map(crate::tasks::task))
        }

        async fn task_uncleaned(&self, limit: u32) -> crate::Result<Vec<crate::TaskRow>> {
            let raws: Vec<crate::tasks::RawTask> = sqlx::query_as(&format!(
                "SELECT {} FROM tasks WHERE state <> 'open' AND cleaned = 0 ORDER BY ended_ms LIMIT $1",
                crate::tasks::TASK_COLUMNS
            ))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::tasks::task).collect())
        }

        async fn task_mark_cleaned(&self, id: &str) -> crate::Result<()> {
            sqlx::query("UPDATE tasks SET cleaned = 1 WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            Ok(())
        }

        async fn task_purge_ended(
            &self,
            before_ms: i64,
            limit: u32,
        ) -> crate::Result<crate::TaskPurge> {
            let limit = i64::from(limit);
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            let grants = sqlx::query(
                "DELETE FROM grants WHERE id IN (SELECT id FROM grants \
                 WHERE state = 'ended' AND ended_ms < $1 LIMIT $2)",
            )
            .bind(before_ms)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            let requests = sqlx::query(
                "DELETE FROM grant_requests WHERE id IN (SELECT id FROM grant_requests \
                 WHERE state <> 'pending' AND COALESCE(decided_ms, expires_ms) < $1 LIMIT $2)",
            )
            .bind(before_ms)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            // Tasks whose grants and requests are all gone (kept until then: they name it).
            let ended = "SELECT t.id FROM tasks t WHERE t.state <> 'open' AND t.cleaned = 1 \
                 AND t.ended_ms < $1 \
                 AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.task = t.id) \
                 AND NOT EXISTS (SELECT 1 FROM grant_requests r WHERE r.task = t.id) LIMIT $2";
            let ids: Vec<(String,)> = sqlx::query_as(ended)
                .bind(before_ms)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let mut tasks = 0;
            for (id,) in &ids {
                sqlx::query("DELETE FROM task_agents WHERE task = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tasks += sqlx::query("DELETE FROM tasks WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
            }
            tx.commit().await.map_err(db_err)?;
            Ok(crate::TaskPurge {
                tasks,
                grants,
                requests,
            })
        }

        async fn task_agent_put(&self, a: &crate::TaskAgentRow) -> crate::Result<bool> {
            let (_gate, mut tx) = self.begin_write().await?;
            let n = sqlx::query(
                "INSERT INTO task_agents (task, agent, role, assigned_ms, assigned_by) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&a.task)
            .bind(&a.agent)
            .bind(&a.role)
            .bind(a.assigned_ms)
            .bind(&a.assigned_by)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            if n > 0 {
                let change = crate::changes::Change::put(crate::ChangeKind::Task, &a.task);
                Self::note(&mut tx, &[change]).await?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(n > 0)
        }

        async fn task_agents(&self, task: &str) -> crate::Result<Vec<crate::TaskAgentRow>> {
            let raws: Vec<(String, String, String, i64, String)> = sqlx::query_as(
                "SELECT task, agent, role, assigned_ms, assigned_by FROM task_agents \
                 WHERE task = $1 ORDER BY assigned_ms, agent",
            )
            .bind(task)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws
                .into_iter()
                .map(|(task, agent, role, assigned_ms, assigned_by)| crate::TaskAgentRow {
                    task,
                    agent,
                    role,
                    assigned_ms,
                    assigned_by,
                })
                .collect())
        }

        async fn open_task_agents(&self) -> crate::Result<Vec<(crate::TaskRow, crate::TaskAgentRow)>> {
            let cols = crate::tasks::TASK_COLUMNS
                .split(", ")
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let rows = sqlx::query(&format!(
                "SELECT {cols}, a.agent, a.role, a.assigned_ms, a.assigned_by FROM tasks t \
                 JOIN task_agents a ON a.task = t.id WHERE t.state = 'open' \
                 ORDER BY a.assigned_ms, t.id"
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                use sqlx::Row as _;
                let t = crate::TaskRow {
                    id: r.try_get("id").map_err(db_err)?,
                    kind: r.try_get("kind").map_err(db_err)?,
                    owner: r.try_get("owner").map_err(db_err)?,
                    resources: r.try_get("resources").map_err(db_err)?,
                    attributes: r.try_get("attributes").map_err(db_err)?,
                    deadline_ms: r.try_get("deadline_ms").map_err(db_err)?,
                    state: r.try_get("state").map_err(db_err)?,
                    created_ms: r.try_get("created_ms").map_err(db_err)?,
                    created_by: r.try_get("created_by").map_err(db_err)?,
                    ended_ms: r.try_get("ended_ms").map_err(db_err)?,
                    end_reason: r.try_get("end_reason").map_err(db_err)?,
                    cleaned: r.try_get::<i64, _>("cleaned").map_err(db_err)? != 0,
                };
                let a = crate::TaskAgentRow {
                    task: t.id.clone(),
                    agent: r.try_get("agent").map_err(db_err)?,
                    role: r.try_get("role").map_err(db_err)?,
                    assigned_ms: r.try_get("assigned_ms").map_err(db_err)?,
                    assigned_by: r.try_get("assigned_by").map_err(db_err)?,
                };
                out.push((t, a));
            }
            Ok(out)
        }

        async fn grant_insert(&self, g: &crate::GrantRow) -> crate::Result<()> {
            sqlx::query(&format!(
                "INSERT INTO grants ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                crate::tasks::GRANT_COLUMNS
            ))
            .bind(&g.id)
            .bind(&g.task)
            .bind(&g.agent)
            .bind(&g.resource)
            .bind(&g.permission)
            .bind(g.expires_ms)
            .bind(&g.state)
            .bind(&g.source)
            .bind(g.created_ms)
            .bind(&g.created_by)
            .bind(g.ended_ms)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }

        async fn grant_list(
            &self,
            task: Option<&str>,
            agent: Option<&str>,
            state: Option<&str>,
        ) -> crate::Result<Vec<crate::GrantRow>> {
            let raws: Vec<crate::tasks::RawGrant> = sqlx::query_as(&format!(
                "SELECT {} FROM grants WHERE ($1 IS NULL OR task = $1) AND ($2 IS NULL OR agent = $2) \
                 AND ($3 IS NULL OR state = $3) ORDER BY created_ms, id LIMIT 10000",
                crate::tasks::GRANT_COLUMNS
            ))
            .bind(task)
            .bind(agent)
            .bind(state)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::tasks::grant).collect())
        }

        async fn grant_end(
            &self,
            task: &str,
            now_ms: i64,
        ) -> crate::Result<Vec<crate::GrantRow>> {
            let raws: Vec<crate::tasks::RawGrant> = sqlx::query_as(&format!(
                "UPDATE grants SET state = 'ended', ended_ms = $2 WHERE task = $1 AND state = 'active' \
                 RETURNING {}",
                crate::tasks::GRANT_COLUMNS
            ))
            .bind(task)
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::tasks::grant).collect())
        }

        async fn grant_end_one(&self, id: &str, now_ms: i64) -> crate::Result<Option<crate::GrantRow>> {
            let raw: Option<crate::tasks::RawGrant> = sqlx::query_as(&format!(
                "UPDATE grants SET state = 'ended', ended_ms = $2 WHERE id = $1 AND state = 'active' \
                 RETURNING {}",
                crate::tasks::GRANT_COLUMNS
            ))
            .bind(id)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raw.map(crate::tasks::grant))
        }

        async fn request_insert(&self, r: &crate::GrantRequestRow) -> crate::Result<()> {
            sqlx::query(&format!(
                "INSERT INTO grant_requests ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                 $11, $12, $13, $14, $15)",
                crate::tasks::REQUEST_COLUMNS
            ))
            .bind(&r.id)
            .bind(&r.task)
            .bind(&r.agent)
            .bind(&r.resource)
            .bind(&r.permission)
            .bind(&r.reason)
            .bind(r.ttl_s)
            .bind(&r.state)
            .bind(&r.decision_id)
            .bind(r.created_ms)
            .bind(r.expires_ms)
            .bind(&r.decided_by)
            .bind(r.decided_ms)
            .bind(&r.decision_reason)
            .bind(&r.grant_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }

        async fn request_get(&self, id: &str) -> crate::Result<Option<crate::GrantRequestRow>> {
            let raw: Option<crate::tasks::RawRequest> = sqlx::query_as(&format!(
                "SELECT {} FROM grant_requests WHERE id = $1",
                crate::tasks::REQUEST_COLUMNS
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raw.map(crate::tasks::request))
        }

        async fn request_list(
            &self,
            state: Option<&str>,
            limit: u32,
        ) -> crate::Result<Vec<crate::GrantRequestRow>> {
            let raws: Vec<crate::tasks::RawRequest> = sqlx::query_as(&format!(
                "SELECT {} FROM grant_requests WHERE ($1 IS NULL OR state = $1) \
                 ORDER BY created_ms, id LIMIT $2",
                crate::tasks::REQUEST_COLUMNS
            ))
            .bind(state)
            .bind(i64::from(limit.min(1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::tasks::request).collect())
        }

        async fn request_decide(
            &self,
            id: &str,
            state: &str,
            by: &str,
            reason: &str,
            now_ms: i64,
            grant_id: Option<&str>,
        ) -> crate::Result<bool> {
            let n = sqlx::query(
                "UPDATE grant_requests SET state = $2, decided_by = $3, decision_reason = $4, \
                 decided_ms = $5, grant_id = $6 WHERE id = $1 AND state = 'pending'",
            )
            .bind(id)
            .bind(state)
            .bind(by)
            .bind(reason)
            .bind(now_ms)
            .bind(grant_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected();
            Ok(n > 0)
        }

        async fn risk_set(&self, r: &crate::RiskRow) -> crate::Result<()> {
            let (_gate, mut tx) = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO agent_risk (agent, score_milli, reason, set_ms, set_by) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (agent) DO UPDATE SET \
                 score_milli = excluded.score_milli, reason = excluded.reason, \
                 set_ms = excluded.set_ms, set_by = excluded.set_by",
            )
            .bind(&r.agent)
            .bind(r.score_milli)
            .bind(&r.reason)
            .bind(r.set_ms)
            .bind(&r.set_by)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let change = crate::changes::Change::put(crate::ChangeKind::Risk, &r.agent);
            Self::note(&mut tx, &[change]).await?;
            tx.commit().await.map_err(db_err)?;
            Ok(())
        }

        async fn risk_get(&self, agent: &str) -> crate::Result<Option<crate::RiskRow>> {
            let raw: Option<(String, i64, String, i64, String)> = sqlx::query_as(
                "SELECT agent, score_milli, reason, set_ms, set_by FROM agent_risk WHERE agent = $1",
            )
            .bind(agent)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raw.map(|(agent, score_milli, reason, set_ms, set_by)| crate::RiskRow {
                agent,
                score_milli,
                reason,
                set_ms,
                set_by,
            }))
        }

        async fn task_due(&self, now_ms: i64, limit: u32) -> crate::Result<Vec<crate::TaskRow>> {
            let raws: Vec<crate::tasks::RawTask> = sqlx::query_as(&format!(
                "SELECT {} FROM tasks WHERE state = 'open' AND deadline_ms <= $1 \
                 ORDER BY deadline_ms, id LIMIT $2",
                crate::tasks::TASK_COLUMNS
            ))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::tasks::task).collect())
        }

        async fn request_due(
            &self,
            now_ms: i64,
            limit: u32,
        ) -> crate::Result<Vec<crate::GrantRequestRow>> {
            let raws: Vec<crate::tasks::RawRequest> = sqlx::query_as(&format!(
                "SELECT {} FROM grant_requests WHERE state = 'pending' AND expires_ms <= $1 \
                 ORDER BY expires_ms, id LIMIT $2",
                crate::tasks::REQUEST_COLUMNS
            ))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::tasks::request).collect())
        }

        async fn risk_list(&self) -> crate::Result<Vec<crate::RiskRow>> {
            let raws: Vec<(String, i64, String, i64, String)> = sqlx::query_as(
                "SELECT agent, score_milli, reason, set_ms, set_by FROM agent_risk ORDER BY agent",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws
                .into_iter()
                .map(|(agent, score_milli, reason, set_ms, set_by)| crate::RiskRow {
                    agent,
                    score_milli,
                    reason,
                    set_ms,
                    set_by,
                })
                .collect())
        }
    }
    };
}

pub(crate) use task_methods;
