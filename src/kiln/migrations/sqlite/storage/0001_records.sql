-- Version 1 of the storage schema (docs/storage.md explains the layout).

-- step: create table records
CREATE TABLE IF NOT EXISTS records (
    resource_name TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    id TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL,
    PRIMARY KEY (resource_name, parent_id, id)
);

-- step: create index records_last_modified
CREATE INDEX IF NOT EXISTS records_last_modified
    ON records (resource_name, parent_id, last_modified);

-- step: create table timestamps
CREATE TABLE IF NOT EXISTS timestamps (
    resource_name TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    PRIMARY KEY (resource_name, parent_id)
) WITHOUT ROWID;
