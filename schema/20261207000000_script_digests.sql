-- The digest (md5, the run's version_id) of each script's current source, kept beside it.
-- A claim and a start hand each run its version's digest; computed there, it cost an md5 of
-- the whole source per run (2.4 ms for a 1 MiB script: a claim of 50 such runs spent 120 ms
-- on it, and every other tenant's events waited behind that claim). Written by the trigger
-- below in the same transaction as the source, so that every snapshot that sees a source sees
-- its digest. (A write that bypasses triggers would leave it stale, as it would leave every
-- queue table; the claim falls back to md5() when a script has no row.)

-- +migrate Up
-- +migrate StatementBegin
CREATE TABLE jsrt_script_digests (
    script_id UUID PRIMARY KEY REFERENCES scripts(id) ON DELETE CASCADE,
    digest TEXT NOT NULL
);

INSERT INTO jsrt_script_digests (script_id, digest)
SELECT s.id, md5(s.source) FROM scripts s;

CREATE FUNCTION jsrt_scripts_digest() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.source IS NOT DISTINCT FROM OLD.source THEN
        RETURN NULL;
    END IF;
    INSERT INTO jsrt_script_digests (script_id, digest) VALUES (NEW.id, md5(NEW.source))
    ON CONFLICT (script_id) DO UPDATE SET digest = EXCLUDED.digest;
    RETURN NULL;
END
$$;

CREATE TRIGGER jsrt_scripts_digest AFTER INSERT OR UPDATE OF source ON scripts
    FOR EACH ROW EXECUTE FUNCTION jsrt_scripts_digest();
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP TRIGGER IF EXISTS jsrt_scripts_digest ON scripts;
DROP FUNCTION IF EXISTS jsrt_scripts_digest();
DROP TABLE IF EXISTS jsrt_script_digests;
-- +migrate StatementEnd
