-- One row per request under /v1/: what it used, what it cost, how it ended.
CREATE TABLE usage_records (
    id INTEGER PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    request_id TEXT,
    key TEXT NOT NULL,
    model TEXT,
    response_model TEXT,
    upstream TEXT,
    endpoint TEXT NOT NULL,
    status INTEGER,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    usage_source TEXT,
    cost REAL,
    cache TEXT,
    tokens_saved BIGINT NOT NULL,
    attempts INTEGER,
    ttfb_ms REAL,
    duration_ms REAL NOT NULL,
    end_reason TEXT NOT NULL
);
CREATE INDEX usage_records_time ON usage_records (time_ms);
CREATE INDEX usage_records_key_time ON usage_records (key, time_ms);
