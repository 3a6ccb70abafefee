-- Version 1 of the cache schema.

-- step: create table cache
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
);

-- step: create index cache_expires_at
CREATE INDEX IF NOT EXISTS cache_expires_at ON cache (expires_at)
    WHERE expires_at IS NOT NULL;
