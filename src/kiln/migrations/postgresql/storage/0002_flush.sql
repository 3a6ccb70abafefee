-- Version 2 of the storage schema: the check the flush of a unit of work makes
-- (kiln.storage.postgresql, PostgreSQLStorage.apply). Each write statement
-- ends with kiln_expect(<rows written> = 1, <its index>): a write that did not
-- find the record as expected aborts the transaction (SQLSTATE KL409, the
-- write's index as DETAIL), so the COMMIT sent with it commits nothing.

-- step: create function kiln_expect
CREATE OR REPLACE FUNCTION kiln_expect(ok boolean, write_index integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION USING ERRCODE = 'KL409', DETAIL = write_index::text,
            MESSAGE = 'kiln: a write found the record changed meanwhile'
        ; END IF
    ; RETURN true
; END $$;
