-- Version 1 of the permission schema. Ids are BYTEA: the contract allows NUL,
-- which TEXT cannot hold.

-- step: create table user_principals
CREATE TABLE IF NOT EXISTS user_principals (
    user_id BYTEA NOT NULL,
    principal BYTEA NOT NULL,
    PRIMARY KEY (user_id, principal)
);

-- step: create index user_principals_principal
CREATE INDEX IF NOT EXISTS user_principals_principal
    ON user_principals (principal, user_id);

-- step: create table access_control_entries
CREATE TABLE IF NOT EXISTS access_control_entries (
    object_id BYTEA NOT NULL,
    permission BYTEA NOT NULL,
    principal BYTEA NOT NULL,
    PRIMARY KEY (object_id, permission, principal)
);

-- step: create index access_control_entries_principal
CREATE INDEX IF NOT EXISTS access_control_entries_principal
    ON access_control_entries (principal, permission, object_id);
