-- 002_seed.sql — credit packages and model prices (docs/spec.md §2).
-- Prices are integer micro-dollars per 1M tokens. A price change is a NEW row
-- with a later effective_from, never an UPDATE.

INSERT INTO billing.credit_packages (code, name, price_cents, currency, credits_micros) VALUES
    ('starter',  'Starter',   500, 'usd',  5000000),
    ('standard', 'Standard', 2000, 'usd', 21000000),
    ('pro',      'Pro',      5000, 'usd', 55000000)
ON CONFLICT (code) DO NOTHING;

INSERT INTO billing.model_prices (model, input_micros_per_mtok, output_micros_per_mtok, effective_from) VALUES
    ('gpt-4o',            2500000, 10000000, '2024-01-01T00:00:00Z'),
    ('gpt-4o-mini',        150000,   600000, '2024-01-01T00:00:00Z'),
    ('gpt-4.1',           2000000,  8000000, '2024-01-01T00:00:00Z'),
    ('gpt-4.1-mini',       400000,  1600000, '2024-01-01T00:00:00Z'),
    ('o3-mini',           1100000,  4400000, '2024-01-01T00:00:00Z'),
    ('claude-3-5-sonnet', 3000000, 15000000, '2024-01-01T00:00:00Z'),
    ('claude-3-5-haiku',   800000,  4000000, '2024-01-01T00:00:00Z')
ON CONFLICT (model, effective_from) DO NOTHING;
