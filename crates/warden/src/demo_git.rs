//! `warden demo`, scenario 2: a Planner, a Coder and a Reviewer fix a bug in a real git
//! repository guarded by Warden (the same steps as `examples/multi-agent-bugfix/run.sh`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::demo::{CODER, Demo, PLANNER, REVIEWER, last_line, which, write_tree};

const MODEL: &str = include_str!("../../../examples/multi-agent-bugfix/model.fga");
const GIT_CEDAR: &str = include_str!("../../../examples/multi-agent-bugfix/git.cedar");
const GIT_SCHEMA: &str = include_str!("../../../examples/multi-agent-bugfix/git.cedarschema");
const PAGINATION: &str = include_str!("../../../examples/multi-agent-bugfix/project/pagination.py");
const TESTS: &str = include_str!("../../../examples/multi-agent-bugfix/project/test_pagination.py");

const REPO: &str = "bugfix-demo";
const TASK: &str = "bug-42";

/// Runs `git ARGS` in `dir` with a private configuration; stdout+stderr, and whether it
/// succeeded.
async fn git(demo: &Demo, dir: &Path, args: &[&str]) -> Result<(bool, String)> {
    let home = demo.dir.join("home");
    std::fs::create_dir_all(&home)?;
    let out = tokio::process::Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Demo agent",
            "-c",
            "user.email=agent@example.org",
        ])
        .args(args)
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("WARDEN_TOKEN")
        .env_remove("WARDEN_TOKEN_FILE")
        .env_remove("WARDEN_SERVER")
        .output()
        .await
        .context("running git")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

async fn git_ok(demo: &Demo, dir: &Path, args: &[&str]) -> Result<String> {
    let (ok, text) = git(demo, dir, args).await?;
    if !ok {
        bail!("git {}: {text}", args.join(" "));
    }
    Ok(text)
}

/// The hook's lines as the pusher sees them (`remote: warden: …`).
fn remote_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("remote: warden:"))
        .map(|l| format!("warden:{}", l.trim_end()))
        .collect()
}

/// A push of `refspec` from `dir` as `who` (its JWT-SVID for `git:<repository>` as the push
/// option).
async fn push(demo: &Demo, dir: &Path, who: &str, refspec: &str) -> Result<(bool, Vec<String>)> {
    let svid = demo.svid_for(who, &format!("git:{REPO}")).await?;
    let option = format!("warden-token={svid}");
    let (ok, text) = git(demo, dir, &["push", "-o", &option, "origin", refspec]).await?;
    Ok((ok, remote_lines(&text)))
}

/// An agent API call with `who`'s JWT-SVID.
async fn as_agent(demo: &Demo, who: &str, path: &str, body: Value) -> Result<Value> {
    let svid = demo.svid(who).await?;
    demo.call(reqwest::Method::POST, path, &svid, body).await
}

/// Clones `from` into `to` (`--bare` when `bare`).
async fn clone(demo: &Demo, from: &Path, to: &Path, bare: bool) -> Result<()> {
    let (from, to) = (from.display().to_string(), to.display().to_string());
    let mut args = vec!["clone", "-q"];
    if bare {
        args.push("--bare");
    }
    args.extend([from.as_str(), to.as_str()]);
    git_ok(demo, &demo.dir, &args).await?;
    Ok(())
}

pub(crate) async fn bug_fix(demo: &mut Demo) -> Result<()> {
    println!("\n== Scenario 2: dynamic, task-scoped permissions on a real git repository");
    demo.step("The operator pushes the relationship model and the git policy");
    let files = demo.dir.join("git-policy");
    write_tree(
        &files,
        &[
            ("model.fga", MODEL),
            ("git.cedar", GIT_CEDAR),
            ("git.cedarschema", GIT_SCHEMA),
        ],
    )?;
    demo.operator(&[
        "rebac",
        "model",
        "push",
        &files.join("model.fga").display().to_string(),
    ])
    .await?;
    demo.operator(&[
        "policy",
        "push",
        "git",
        &files.join("git.cedar").display().to_string(),
        &files.join("git.cedarschema").display().to_string(),
    ])
    .await?;
    demo.say(
        "A writer of the repository may push its open patch_bug task's branch while its risk\n\
         score is below 0.5; the Reviewer is only ever a reader.",
    );

    demo.step("The operator creates the repository and lets Warden guard it");
    let src = demo.dir.join("import");
    write_tree(
        &src,
        &[("pagination.py", PAGINATION), ("test_pagination.py", TESTS)],
    )?;
    git_ok(demo, &src, &["init", "-q", "-b", "main"]).await?;
    git_ok(demo, &src, &["add", "."]).await?;
    git_ok(demo, &src, &["commit", "-q", "-m", "Pagination helpers"]).await?;
    let bare = demo.dir.join(format!("srv/{REPO}.git"));
    std::fs::create_dir_all(demo.dir.join("srv"))?;
    clone(demo, &src, &bare, true).await?;
    let token = demo
        .api(
            reqwest::Method::POST,
            "/v1/tokens",
            json!({"name": "git-hook", "role": "enforcer"}),
        )
        .await?;
    let token_file = demo.dir.join("hook.token");
    crate::keys::write_secret_file(
        &token_file,
        token["token"].as_str().unwrap_or_default().as_bytes(),
    )?;
    let out = demo
        .operator_plain(&[
            "git",
            "install-hook",
            &bare.display().to_string(),
            "--server",
            &demo.url,
            "--token-file",
            &token_file.display().to_string(),
            "--repository",
            REPO,
            "--package",
            "git",
        ])
        .await?;
    demo.say(&last_line(&out));

    demo.step(&format!(
        "The Planner opens task {TASK} (patch_bug) and assigns the Coder and the Reviewer"
    ));
    let branch = format!("refs/heads/fix/{TASK}");
    as_agent(
        demo,
        PLANNER,
        "/v1/agent/tasks",
        json!({"id": TASK, "type": "patch_bug", "owner": "alice@example.org",
               "resources": [format!("repository:{REPO}")], "deadline_s": 3600,
               "attributes": {"branch": branch}}),
    )
    .await?;
    for (who, role, permission) in [(CODER, "coder", "writer"), (REVIEWER, "reviewer", "reader")] {
        as_agent(
            demo,
            PLANNER,
            &format!("/v1/agent/tasks/{TASK}/agents"),
            json!({"agent": who, "role": role, "permissions": [permission]}),
        )
        .await?;
        demo.say(&format!(
            "{who}: {role}, {permission} of repository:{REPO} until the task ends"
        ));
    }

    demo.step("The Coder clones, fixes the off-by-one bug and pushes to its task branch");
    let coder = demo.dir.join("coder");
    clone(demo, &bare, &coder, false).await?;
    let file = coder.join("pagination.py");
    let fixed = std::fs::read_to_string(&file)?.replace(
        "    return total_items // per_page",
        "    # Round up: a partly filled last page is a page.\n    return -(-total_items // per_page)",
    );
    std::fs::write(&file, fixed)?;
    if which("python3") {
        let tests = tokio::process::Command::new("python3")
            .args(["-m", "unittest", "-q"])
            .current_dir(&coder)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .await?;
        demo.say(&format!(
            "tests after the fix: {}",
            if tests.status.success() {
                "pass"
            } else {
                "FAIL"
            }
        ));
    }
    git_ok(
        demo,
        &coder,
        &["commit", "-q", "-am", "Count a partly filled last page"],
    )
    .await?;
    let (ok, lines) = push(demo, &coder, CODER, &format!("HEAD:{branch}")).await?;
    for l in &lines {
        demo.say(l);
    }
    if !ok {
        bail!("the Coder's push was refused");
    }
    demo.say("accepted: the task branch holds the fix");

    demo.step("The Reviewer fetches and reads the diff, but may not push");
    let reviewer = demo.dir.join("reviewer");
    clone(demo, &bare, &reviewer, false).await?;
    git_ok(
        demo,
        &reviewer,
        &[
            "fetch",
            "-q",
            "origin",
            &format!("{branch}:refs/remotes/origin/task-fix"),
        ],
    )
    .await?;
    let stat = git_ok(
        demo,
        &reviewer,
        &["--no-pager", "diff", "--stat", "main", "origin/task-fix"],
    )
    .await?;
    demo.say(stat.trim());
    git_ok(
        demo,
        &reviewer,
        &["checkout", "-q", "-b", "review", "origin/task-fix"],
    )
    .await?;
    std::fs::write(
        reviewer.join("pagination.py"),
        format!(
            "{}\n# Reviewed.\n",
            std::fs::read_to_string(reviewer.join("pagination.py"))?
        ),
    )?;
    git_ok(demo, &reviewer, &["commit", "-q", "-am", "Reviewer's edit"]).await?;
    let (ok, lines) = push(demo, &reviewer, REVIEWER, &format!("HEAD:{branch}")).await?;
    for l in &lines {
        demo.say(l);
    }
    if ok {
        bail!("the Reviewer pushed");
    }

    demo.step(&format!(
        "The Reviewer approves; the Planner completes task {TASK}"
    ));
    as_agent(
        demo,
        PLANNER,
        &format!("/v1/agent/tasks/{TASK}/end"),
        json!({"outcome": "completed", "reason": "fix reviewed and approved"}),
    )
    .await?;
    demo.say("its grants ended with it: the relationship tuples are gone");

    demo.step("The Coder pushes again after the task completed");
    std::fs::write(
        &file,
        format!("{}\n# A late change.\n", std::fs::read_to_string(&file)?),
    )?;
    git_ok(demo, &coder, &["commit", "-q", "-am", "A late change"]).await?;
    let (ok, lines) = push(demo, &coder, CODER, &format!("HEAD:{branch}")).await?;
    for l in &lines {
        demo.say(l);
    }
    if ok {
        bail!("the late push landed");
    }
    demo.say("refused: the same agent and command; the permission ended with the task");

    demo.step("A new task for the Coder, but the operator raises its risk score to 0.7");
    let task2 = "bug-43";
    let branch2 = format!("refs/heads/fix/{task2}");
    as_agent(
        demo,
        PLANNER,
        "/v1/agent/tasks",
        json!({"id": task2, "type": "patch_bug", "owner": "alice@example.org",
               "resources": [format!("repository:{REPO}")], "deadline_s": 3600,
               "attributes": {"branch": branch2}}),
    )
    .await?;
    as_agent(
        demo,
        PLANNER,
        &format!("/v1/agent/tasks/{task2}/agents"),
        json!({"agent": CODER, "role": "coder", "permissions": ["writer"]}),
    )
    .await?;
    demo.api(
        reqwest::Method::POST,
        "/v1/risk",
        json!({"agent": CODER, "score": 0.7, "reason": "demo: unusual activity"}),
    )
    .await?;
    let (ok, lines) = push(demo, &coder, CODER, &format!("HEAD:{branch2}")).await?;
    for l in &lines {
        demo.say(l);
    }
    if ok {
        bail!("the Coder pushed at risk 0.7");
    }
    demo.say("refused: decisions read the live risk score");
    Ok(())
}
