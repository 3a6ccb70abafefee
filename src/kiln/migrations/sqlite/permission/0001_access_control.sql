-- Version 1 of the permission schema (docs/permission.md explains the layout).

-- step: create table user_principals
CREATE TABLE IF NOT EXISTS user_principals (
    user_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    PRIMARY KEY (user_id, principal)
) WITHOUT ROWID;

-- step: create index user_principals_principal
CREATE INDEX IF NOT EXISTS user_principals_principal
    ON user_principals (principal, user_id);

-- step: create table access_control_entries
CREATE TABLE IF NOT EXISTS access_control_entries (
    object_id TEXT NOT NULL,
    permission TEXT NOT NULL,
    principal TEXT NOT NULL,
    PRIMARY KEY (object_id, permission, principal)
) WITHOUT ROWID;

-- step: create index access_control_entries_principal
CREATE INDEX IF NOT EXISTS access_control_entries_principal
    ON access_control_entries (principal, permission, object_id);
