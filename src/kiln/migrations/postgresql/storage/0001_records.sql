-- Version 1 of the storage schema (docs/storage.md explains the layout).
-- The function kiln_casefold comes first, from Python: its body depends on
-- whether the server has ICU collations.

-- step: create table records
CREATE TABLE IF NOT EXISTS records (
    resource_name TEXT COLLATE "C" NOT NULL,
    parent_id TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    last_modified BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    data JSONB NOT NULL,
    PRIMARY KEY (resource_name, parent_id, id)
);

-- step: create index records_last_modified
CREATE INDEX IF NOT EXISTS records_last_modified
    ON records (resource_name, parent_id, last_modified);

-- step: create table timestamps
CREATE TABLE IF NOT EXISTS timestamps (
    resource_name TEXT COLLATE "C" NOT NULL,
    parent_id TEXT COLLATE "C" NOT NULL,
    last_modified BIGINT NOT NULL,
    PRIMARY KEY (resource_name, parent_id)
) WITH (fillfactor = 50);
