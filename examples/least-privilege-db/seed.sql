-- A small customer database for scenario 1 (least-privilege agent). run.sh loads it into a
-- database of its own, created for the run and dropped afterwards.
--
-- The summarizer's role template grants SELECT on `customers` and `orders` only;
-- `payment_methods` is in the same schema on purpose, to show the agent cannot read it.

CREATE TABLE customers (
    id         integer PRIMARY KEY,
    name       text    NOT NULL,
    country    text    NOT NULL,
    signed_up  date    NOT NULL
);

CREATE TABLE orders (
    id           integer PRIMARY KEY,
    customer_id  integer NOT NULL REFERENCES customers (id),
    placed_on    date    NOT NULL,
    amount_cents integer NOT NULL CHECK (amount_cents > 0)
);

-- Sensitive: never part of a summary.
CREATE TABLE payment_methods (
    id           integer PRIMARY KEY,
    customer_id  integer NOT NULL REFERENCES customers (id),
    card_brand   text    NOT NULL,
    card_last4   text    NOT NULL,
    card_expiry  text    NOT NULL
);

INSERT INTO customers (id, name, country, signed_up) VALUES
    (1,  'Ada Lovelace Ltd',       'GB', '2023-02-11'),
    (2,  'Babbage & Sons',         'GB', '2023-05-30'),
    (3,  'Curie Analytics',        'FR', '2023-07-04'),
    (4,  'Dijkstra Routing BV',    'NL', '2023-08-19'),
    (5,  'Euler Numerics',         'CH', '2023-09-02'),
    (6,  'Fourier Audio GmbH',     'DE', '2023-11-23'),
    (7,  'Gauss Survey AG',        'DE', '2024-01-15'),
    (8,  'Hopper Compilers Inc',   'US', '2024-02-09'),
    (9,  'Ishango Counting',       'CD', '2024-03-03'),
    (10, 'Jacquard Looms SARL',    'FR', '2024-04-21'),
    (11, 'Knuth Typesetting',      'US', '2024-05-05'),
    (12, 'Lamport Clocks',         'US', '2024-06-30');

INSERT INTO orders (id, customer_id, placed_on, amount_cents) VALUES
    (101, 1,  '2024-07-02', 129900),
    (102, 1,  '2024-08-14',  45000),
    (103, 2,  '2024-07-19',  89950),
    (104, 3,  '2024-09-01', 250000),
    (105, 3,  '2024-09-27',  12500),
    (106, 4,  '2024-08-08',  67300),
    (107, 5,  '2024-07-30', 150000),
    (108, 6,  '2024-09-12',  99900),
    (109, 7,  '2024-08-23',  38000),
    (110, 8,  '2024-07-07', 420000),
    (111, 8,  '2024-09-18',  76500),
    (112, 10, '2024-08-02',  23400),
    (113, 11, '2024-09-09', 310000),
    (114, 12, '2024-07-25',  55500),
    (115, 12, '2024-09-29',  61000),
    (116, 2,  '2024-06-12',  19900);  -- Q2: outside the summary

INSERT INTO payment_methods (id, customer_id, card_brand, card_last4, card_expiry) VALUES
    (1, 1,  'visa',       '4242', '2027-01'),
    (2, 3,  'mastercard', '4444', '2026-09'),
    (3, 8,  'amex',       '0005', '2028-03'),
    (4, 12, 'visa',       '1881', '2026-12');
