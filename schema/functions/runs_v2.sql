-- The run path's functions, version 2 (#17): the claim of slot leases and local queues, and
-- runs started now in batches. Applied after triggers.sql, idempotently, whenever its content
-- changes (like triggers.sql).
--
-- A function or type here never changes once released: a change is a new version (_v3)
-- beside it, so that during a rolling deploy the daemons of the previous release keep
-- calling exactly the function they were written against. The row types are declared once,
-- here, and only ever created.
--
-- The daemon decides the policy (how many slots it can take, how deep its local queues
-- are, when it gives slots back); these functions only move rows, under the per-script lock
-- that every starter of a script's runs takes (jsrt_run_lock in triggers.sql).

DO $$ BEGIN
    -- A run handed to a daemon. Tenant JSON (limits, input, trigger) comes as text: the daemon
    -- passes the input on to V8 as it is and decodes the rest itself, so no value a tenant wrote
    -- can fail a claim.
    CREATE TYPE jsrt_run_v2 AS (
        execution_id UUID, tenant_id UUID, script_id UUID, source TEXT, version_id TEXT,
        resource_limits TEXT, input TEXT, trigger_type TEXT, trigger_data TEXT,
        event_id UUID, dead_letter_id UUID, depth INTEGER, script_name TEXT
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- (nor had it when the script's name joined the run, for the log lines: #14)
DO $$ BEGIN
    ALTER TYPE jsrt_run_v2 ADD ATTRIBUTE script_name TEXT;
EXCEPTION WHEN duplicate_column THEN NULL;
END $$;

DO $$ BEGIN
    CREATE TYPE jsrt_claim_v2 AS (
        runs jsrt_run_v2[],       -- reserved for the daemon, oldest first within each script
        lease_scripts UUID[],     -- slots this claim granted: the scripts ...
        lease_slots INTEGER[],    -- ... and how many each
        lost_scripts UUID[],      -- scripts the daemon asked to refill but holds no lease on
        events INTEGER,           -- events fanned out
        created INTEGER,          -- executions created
        queued INTEGER,           -- of which left 'pending' (for whoever gets slots)
        by_source JSONB,          -- events fanned out, by source
        more BOOLEAN,             -- more events may be due (the fan-out was cut short)
        waiting BOOLEAN,          -- pending runs remain
        filtered INTEGER,         -- (event, script) pairs a payload filter did not match
        filter_errors JSONB       -- ... of which the filter could not be evaluated (#19)
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- (jsrt_claim_v2 had not shipped when #19 added the filters' attributes: a database that
-- has the type without them gets them here.)
DO $$ BEGIN
    ALTER TYPE jsrt_claim_v2 ADD ATTRIBUTE filtered INTEGER;
    ALTER TYPE jsrt_claim_v2 ADD ATTRIBUTE filter_errors JSONB;
EXCEPTION WHEN duplicate_column THEN NULL;
END $$;

-- One round trip of a daemon's claim loop:
-- 1. refill: for each script p_refill_scripts[i] whose slots the daemon holds, reserve up to
--    p_refill_room[i] of its oldest pending runs (room left over goes to step 3);
-- 2. grant: visit the scripts with pending runs in id order from p_script_after, round to
--    just below it (a random start: no script is favoured), and take up to p_per_script of
--    each one's free slots, p_pending_slots in all (of p_slot_limit); reserve p_reserve runs
--    for each slot taken;
-- 3. fan out up to p_event_limit due events (tenants visited as in step 2 from
--    p_tenant_after, at most p_per_tenant events each) into executions: reserved for this
--    daemon while a script it holds (or now takes, out of what is left of p_slot_limit) slots
--    of has room, 'pending' otherwise
--    (never ahead of a script's older pending runs: first in, first out). A script's payload
--    filter for the event's type (jsrt_event_filters) must match: an event it does not
--    match creates no execution for that script; one it cannot evaluate (a payload of
--    another shape: jsonb_path_match's silent form gives NULL) neither, and is reported in
--    filter_errors for the daemon to log. A script with a concurrency_key (per-key
--    ordering) gives each new run its key; a keyed pending run is reserved (steps 1 and 2)
--    only in its key's turn (jsrt_key_turn in routing.sql): one run of a key at a time,
--    in publish order, across every daemon.
-- A run with a source_version (a replay, or a dead letter's retry, of an earlier version:
-- #19) is handed over with that version's source.
-- Reserved runs count against nothing: the lease's slots do. Their executions stay
-- 'pending' until the daemon reports that they really started.
--
-- Version 4 (a 1 MiB script's runs starved every other tenant: each of a claim's runs came
-- with an md5 and a copy of the whole source): each version's digest is read from
-- jsrt_script_digests (or computed once per claim), and a run's source comes only with the
-- first run of its version in the claim - and not at all when the daemon has it: it names the
-- versions it holds in p_known_scripts/p_known_digests, in pairs. A run without its source
-- has it NULL. p_known_scripts NULL: every run comes with its source (version 3).
-- And of each tenant's due events, step 3 fans out no more than p_tenant_bytes of payload
-- (jsrt_events_due.bytes; its oldest event always): a tenant's 250 KB payloads made each
-- claim carry 40 MB, and last half a second, while every other tenant waited. Steps 1-2
-- reserve each script's queued runs within the same budget of their inputs' size (a
-- replay of large inputs queues hundreds); a script cut there gets no new run reserved ahead
-- of the ones left, and `more` tells the daemon to come back.
--
-- Version 5: a daemon holds at most p_tenant_slots slots of one tenant's scripts (its leases
-- counted by tenant; NULL: no such cap, version 4). A run that waits on a timer or a host call
-- holds its slot for as long as it lasts: one tenant's 14 scripts of sleeping runs took all
-- of a daemon's JSRT_CONCURRENCY, and another tenant's event waited 14 s for a slot.
CREATE OR REPLACE FUNCTION jsrt_claim_v5(
    p_daemon TEXT, p_event_limit INTEGER, p_per_tenant INTEGER, p_tenant_after UUID,
    p_slot_limit INTEGER, p_per_script INTEGER, p_script_after UUID, p_reserve INTEGER,
    p_refill_scripts UUID[], p_refill_room INTEGER[], p_pending_slots INTEGER,
    p_known_scripts UUID[], p_known_digests TEXT[], p_tenant_bytes INTEGER,
    p_tenant_slots INTEGER
) RETURNS jsrt_claim_v2
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    -- No "p IS NULL OR" conditions below: they would keep the plan cache from reusing a
    -- generic plan, and planning the fan-out costs more than running it for a few events.
    v_tenant_after UUID := COALESCE(p_tenant_after, '00000000-0000-0000-0000-000000000000');
    v_script_after UUID := COALESCE(p_script_after, '00000000-0000-0000-0000-000000000000');
    v_slot_left INTEGER := GREATEST(COALESCE(p_slot_limit, 0), 0);
    -- of which step 2 may take (the rest only for the scripts of the events fanned out)
    v_pending_left INTEGER := LEAST(GREATEST(COALESCE(p_slot_limit, 0), 0),
                                    GREATEST(COALESCE(p_pending_slots, 0), 0));
    v_reserve INTEGER := GREATEST(COALESCE(p_reserve, 1), 1);
    -- payload bytes of one tenant's events fanned out (its oldest always; NULL: no budget)
    v_tenant_bytes BIGINT := COALESCE(p_tenant_bytes, 9223372036854775807);
    v_cut UUID[] := '{}';          -- scripts whose queued runs steps 1-2 cut at that budget
    v_cut_one BOOLEAN;
    -- room for reserved runs, by script (parallel arrays: a claim touches few scripts)
    v_room_s UUID[] := '{}';
    v_room_n INTEGER[] := '{}';
    v_ids UUID[] := '{}';          -- runs reserved, in order
    v_got UUID[];
    v_grant_s UUID[] := '{}';
    v_grant_n INTEGER[] := '{}';
    v_lost UUID[] := '{}';
    v_script UUID;
    v_cursor UUID := v_script_after;
    v_second_pass BOOLEAN := false;
    v_free INTEGER;
    v_owner UUID;                  -- the tenant of the script a slot is taken of
    v_n INTEGER;
    v_i INTEGER;
    v_events INTEGER := 0;
    v_tenant_full BOOLEAN := false;
    v_by_source JSONB := '{}';
    v_exec UUID[]; v_event UUID[]; v_tscript UUID[]; v_tenant UUID[]; v_type TEXT[];
    v_payload JSONB[]; v_depth INTEGER[]; v_published TIMESTAMPTZ[]; v_key TEXT[];
    v_res_s UUID[] := '{}';        -- new executions to reserve: script ...
    v_res_n INTEGER[] := '{}';     -- ... and how many (the first n of the script's)
    v_queued INTEGER := 0;
    v_filtered INTEGER := 0;
    v_filter_errors JSONB;
    r RECORD;
    v_out jsrt_claim_v2;
BEGIN
    -- A claim need not wait for its WAL flush: should the database crash before the flush,
    -- the claim is forgotten and its events are claimed again (at least once, as for any
    -- crash). What must survive a crash (events, results, dead letters) commits durably.
    PERFORM set_config('synchronous_commit', 'off', true);

    -- 1. refill the local queues of the scripts whose slots this daemon holds
    IF cardinality(p_refill_scripts) > 0 THEN
        SELECT COALESCE(array_agg(w.s) FILTER (WHERE l.script_id IS NULL), '{}'),
               COALESCE(array_agg(w.s) FILTER (WHERE l.script_id IS NOT NULL), '{}'),
               COALESCE(array_agg(w.n) FILTER (WHERE l.script_id IS NOT NULL), '{}')
        INTO v_lost, v_room_s, v_room_n
        FROM unnest(p_refill_scripts, p_refill_room) AS w(s, n)
        LEFT JOIN jsrt_leases l ON l.script_id = w.s AND l.daemon_id = p_daemon;
        IF EXISTS (SELECT 1 FROM jsrt_runs x WHERE x.state = 'pending') THEN
            WITH cand AS (
                SELECT x.execution_id, x.created_at, x.input_bytes, w.s, w.i
                FROM unnest(v_room_s, v_room_n) WITH ORDINALITY AS w(s, n, i)
                CROSS JOIN LATERAL (
                    SELECT p.execution_id, p.created_at, p.input_bytes FROM jsrt_runs p
                    WHERE p.script_id = w.s AND p.state = 'pending'
                      AND (p.order_key IS NULL
                           OR jsrt_key_turn(p.script_id, p.order_key, p.execution_id,
                                            p.created_at, p.dead_letter_id IS NOT NULL))
                    ORDER BY p.created_at LIMIT GREATEST(w.n, 0)
                    FOR UPDATE SKIP LOCKED
                ) x
            ), sized AS (
                SELECT c.*, sum(c.input_bytes) OVER (PARTITION BY c.s
                                                     ORDER BY c.created_at, c.execution_id)
                            - c.input_bytes AS before
                FROM cand c
            ), picked AS (
                SELECT z.execution_id, z.s, z.i, z.created_at FROM sized z
                WHERE z.before < v_tenant_bytes
            ), upd AS (
                UPDATE jsrt_runs r SET state = 'reserved', daemon_id = p_daemon
                FROM picked WHERE r.execution_id = picked.execution_id
                RETURNING r.execution_id, r.script_id
            )
            SELECT COALESCE(array_agg(p.execution_id ORDER BY p.i, p.created_at), '{}'),
                   COALESCE((SELECT array_agg(DISTINCT z.s) FROM sized z
                             WHERE z.before >= v_tenant_bytes), '{}')
            INTO v_got, v_cut
            FROM picked p JOIN upd u ON u.execution_id = p.execution_id;
            v_ids := v_ids || v_got;
            -- what each script's room is now (none for a script cut by its budget: a new run
            -- must not overtake the pending runs left behind)
            SELECT COALESCE(array_agg(w.s ORDER BY w.i), '{}'),
                   COALESCE(array_agg(CASE WHEN w.s = ANY (v_cut) THEN 0
                                           ELSE GREATEST(w.n - COALESCE(c.k, 0), 0) END
                                      ORDER BY w.i), '{}')
            INTO v_room_s, v_room_n
            FROM unnest(v_room_s, v_room_n) WITH ORDINALITY AS w(s, n, i)
            LEFT JOIN (SELECT x.script_id, count(*)::int AS k FROM jsrt_runs x
                       WHERE x.execution_id = ANY (v_got) GROUP BY x.script_id) c
                   ON c.script_id = w.s;
        END IF;
    END IF;

    -- 2. take free slots of scripts with pending runs
    WHILE v_pending_left > 0 LOOP
        -- three plain probes rather than one with "x IS NULL OR" conditions
        IF NOT v_second_pass THEN  -- scripts after p_script_after ...
            SELECT x.script_id INTO v_script FROM jsrt_runs x
            WHERE x.state = 'pending' AND x.script_id > v_cursor
              AND (x.order_key IS NULL
                   OR jsrt_key_turn(x.script_id, x.order_key, x.execution_id, x.created_at,
                                    x.dead_letter_id IS NOT NULL))
            ORDER BY x.script_id LIMIT 1;
        ELSIF v_cursor IS NULL THEN  -- ... then from the lowest ...
            SELECT x.script_id INTO v_script FROM jsrt_runs x
            WHERE x.state = 'pending' AND x.script_id <= v_script_after
              AND (x.order_key IS NULL
                   OR jsrt_key_turn(x.script_id, x.order_key, x.execution_id, x.created_at,
                                    x.dead_letter_id IS NOT NULL))
            ORDER BY x.script_id LIMIT 1;
        ELSE  -- ... up to p_script_after
            SELECT x.script_id INTO v_script FROM jsrt_runs x
            WHERE x.state = 'pending' AND x.script_id > v_cursor
              AND x.script_id <= v_script_after
              AND (x.order_key IS NULL
                   OR jsrt_key_turn(x.script_id, x.order_key, x.execution_id, x.created_at,
                                    x.dead_letter_id IS NOT NULL))
            ORDER BY x.script_id LIMIT 1;
        END IF;
        IF v_script IS NULL THEN
            EXIT WHEN v_second_pass;
            v_second_pass := true;
            v_cursor := NULL;
            CONTINUE;
        END IF;
        v_cursor := v_script;
        -- Try, never wait: two starters visiting scripts in different orders would
        -- otherwise deadlock. A script locked now is being started by someone else.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(jsrt_run_lock(v_script));
        v_free := LEAST(COALESCE(jsrt_free_slots(v_script), 0), p_per_script, v_pending_left);
        CONTINUE WHEN v_free <= 0;
        SELECT s.tenant_id INTO v_owner FROM scripts s WHERE s.id = v_script;
        CONTINUE WHEN v_owner IS NULL;  -- deleted meanwhile: nothing to lease
        IF p_tenant_slots IS NOT NULL THEN
            v_free := LEAST(v_free, p_tenant_slots - COALESCE(
                (SELECT sum(l.slots) FROM jsrt_leases l
                 WHERE l.daemon_id = p_daemon AND l.tenant_id = v_owner), 0));
            CONTINUE WHEN v_free <= 0;
        END IF;
        INSERT INTO jsrt_leases (script_id, daemon_id, tenant_id, slots)
        VALUES (v_script, p_daemon, v_owner, v_free)
        ON CONFLICT (script_id, daemon_id) DO UPDATE SET slots = jsrt_leases.slots + EXCLUDED.slots;
        v_grant_s := v_grant_s || v_script;
        v_grant_n := v_grant_n || v_free;
        v_slot_left := v_slot_left - v_free;
        v_pending_left := v_pending_left - v_free;
        WITH cand AS (
            SELECT p.execution_id, p.created_at, p.input_bytes FROM jsrt_runs p
            WHERE p.script_id = v_script AND p.state = 'pending'
              AND (p.order_key IS NULL
                   OR jsrt_key_turn(p.script_id, p.order_key, p.execution_id, p.created_at,
                                    p.dead_letter_id IS NOT NULL))
            ORDER BY p.created_at LIMIT v_free * v_reserve
            FOR UPDATE SKIP LOCKED
        ), sized AS (
            SELECT c.*, sum(c.input_bytes) OVER (ORDER BY c.created_at, c.execution_id)
                        - c.input_bytes AS before
            FROM cand c
        ), picked AS (
            SELECT z.execution_id, z.created_at FROM sized z WHERE z.before < v_tenant_bytes
        ), upd AS (
            UPDATE jsrt_runs r SET state = 'reserved', daemon_id = p_daemon
            FROM picked WHERE r.execution_id = picked.execution_id
            RETURNING r.execution_id
        )
        SELECT COALESCE(array_agg(p.execution_id ORDER BY p.created_at), '{}'),
               EXISTS (SELECT 1 FROM sized z WHERE z.before >= v_tenant_bytes)
        INTO v_got, v_cut_one
        FROM picked p JOIN upd u ON u.execution_id = p.execution_id;
        v_ids := v_ids || v_got;
        v_i := array_position(v_room_s, v_script);
        IF v_cut_one THEN  -- its budget of input bytes: no room for new runs either
            v_cut := v_cut || v_script;
            IF v_i IS NULL THEN
                v_room_s := v_room_s || v_script;
                v_room_n := v_room_n || 0;
            ELSE
                v_room_n[v_i] := 0;
            END IF;
        ELSIF v_i IS NULL THEN
            v_room_s := v_room_s || v_script;
            v_room_n := v_room_n || GREATEST(v_free * v_reserve - cardinality(v_got), 0);
        ELSE
            v_room_n[v_i] := GREATEST(v_room_n[v_i] + v_free * v_reserve - cardinality(v_got), 0);
        END IF;
    END LOOP;

    -- 3. fan out due events (the probe first: the fan-out's plan costs more than nothing).
    -- Due events are found in jsrt_events_due, never through jsrt_events: the history's
    -- index would be walked over every event dispatched since its last VACUUM (see the
    -- migration 20261205000000_events_due.sql).
    IF p_event_limit > 0 AND EXISTS (SELECT 1 FROM jsrt_events_due) THEN
        WITH RECURSIVE tenants_up AS (
            -- a loose index scan over the tenants with due events: from p_tenant_after up ...
            (SELECT q.tenant_id FROM jsrt_events_due q
             WHERE q.tenant_id > v_tenant_after
             ORDER BY q.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT q.tenant_id FROM jsrt_events_due q
                    WHERE q.tenant_id > t.tenant_id
                    ORDER BY q.tenant_id LIMIT 1)
            FROM tenants_up t WHERE t.tenant_id IS NOT NULL
        ),
        tenants_wrapped AS (
            -- ... then round from the lowest (scanned only when the first part runs out)
            (SELECT q.tenant_id FROM jsrt_events_due q
             WHERE q.tenant_id <= v_tenant_after
             ORDER BY q.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT q.tenant_id FROM jsrt_events_due q
                    WHERE q.tenant_id > t.tenant_id AND q.tenant_id <= v_tenant_after
                    ORDER BY q.tenant_id LIMIT 1)
            FROM tenants_wrapped t WHERE t.tenant_id IS NOT NULL
        ),
        tenants_due AS (
            SELECT tenant_id FROM tenants_up WHERE tenant_id IS NOT NULL
            UNION ALL
            SELECT tenant_id FROM tenants_wrapped WHERE tenant_id IS NOT NULL
        ),
        taken AS (
            -- a tenant's oldest due rows, locked: a concurrent claim skips them
            SELECT q.event_id, q.tenant_id, q.published_at, q.bytes
            FROM (SELECT tenant_id FROM tenants_due LIMIT p_event_limit) t
            CROSS JOIN LATERAL (
                SELECT q.event_id, q.tenant_id, q.published_at, q.bytes FROM jsrt_events_due q
                WHERE q.tenant_id = t.tenant_id
                ORDER BY q.published_at
                LIMIT p_per_tenant
                FOR UPDATE SKIP LOCKED
            ) q
            LIMIT p_event_limit
        ),
        within AS (
            -- of each tenant's, those within its budget of payload bytes (its oldest always):
            -- the rest stay due, for the next claim
            SELECT x.event_id FROM (
                SELECT t.event_id, sum(t.bytes) OVER (PARTITION BY t.tenant_id
                                                      ORDER BY t.published_at, t.event_id)
                                   - t.bytes AS before
                FROM taken t) x
            WHERE x.before < v_tenant_bytes
        ),
        claimed AS (
            -- the events themselves, still undispatched and not being dispatched by a claim
            -- of the previous release (which locks them): those are for the next claim.
            -- IS TRUE: the rows by primary key only - the partial index on dispatched_at IS
            -- NULL must never look like a way in (it is what this table avoids)
            SELECT e.id, e.tenant_id, e.event_type, e.payload, e.depth, e.published_at
            FROM jsrt_events e
            WHERE e.id = ANY (ARRAY(SELECT event_id FROM within)) AND (e.dispatched_at IS NULL) IS TRUE
            FOR UPDATE OF e SKIP LOCKED
        ),
        gone AS (
            -- the due rows of the events claimed, and of events already dispatched or gone;
            -- one whose event another transaction holds stays for the next claim
            DELETE FROM jsrt_events_due q
            WHERE q.event_id = ANY (ARRAY(SELECT event_id FROM taken))
              AND (q.event_id = ANY (ARRAY(SELECT id FROM claimed))
                   OR NOT EXISTS (SELECT 1 FROM jsrt_events e
                                  WHERE e.id = q.event_id AND (e.dispatched_at IS NULL) IS TRUE))
        ),
        marked AS (
            -- = ANY(ARRAY(...)): the planner's estimate for a join here picks a seq scan
            UPDATE jsrt_events e SET dispatched_at = NOW()
            WHERE e.id = ANY (ARRAY(SELECT id FROM claimed))
            RETURNING e.id, e.source
        ),
        subscribed AS (
            -- ok: no filter, or the filter matched (NULL: it could not be evaluated)
            SELECT c.id AS event_id, c.tenant_id, c.event_type, c.payload, c.depth,
                   c.published_at, sub.script_id,
                   f.filter IS NULL OR jsonb_path_match(c.payload, f.filter, '{}', true) AS ok,
                   jsonb_path_query_first(c.payload, k.path, '{}', true) #>> '{}' AS order_key
            FROM claimed c
            JOIN script_event_subscriptions sub
              ON sub.tenant_id = c.tenant_id AND sub.event_type = c.event_type AND sub.is_active
            JOIN scripts s
              ON s.id = sub.script_id AND s.tenant_id = c.tenant_id AND s.status = 'active'
            LEFT JOIN jsrt_event_filters f
              ON f.script_id = sub.script_id AND f.event_type = c.event_type
            LEFT JOIN jsrt_concurrency_keys k ON k.script_id = sub.script_id
        ),
        targets AS (
            SELECT u.event_id, u.tenant_id, u.event_type, u.payload, u.depth, u.published_at,
                   u.script_id, u.order_key, gen_random_uuid() AS execution_id
            FROM subscribed u WHERE u.ok
        ),
        delivered AS (
            -- the primary key (event, script) is the rule behind exactly-once
            INSERT INTO jsrt_deliveries (event_id, script_id, tenant_id, execution_id)
            SELECT t.event_id, t.script_id, t.tenant_id, t.execution_id FROM targets t
            ON CONFLICT (event_id, script_id) DO NOTHING
            RETURNING execution_id
        )
        SELECT (SELECT count(*) FROM marked),
               (SELECT COALESCE(jsonb_object_agg(m.source, m.n), '{}'::jsonb)
                FROM (SELECT source, count(*) AS n FROM marked GROUP BY source) m),
               -- a tenant that filled its share (or its budget of bytes) may have more
               (SELECT COALESCE(max(c.n), 0) >= p_per_tenant
                FROM (SELECT count(*) AS n FROM taken GROUP BY tenant_id) c)
               OR (SELECT count(*) FROM taken) > (SELECT count(*) FROM within),
               array_agg(t.execution_id ORDER BY t.published_at, t.event_id),
               array_agg(t.event_id ORDER BY t.published_at, t.event_id),
               array_agg(t.script_id ORDER BY t.published_at, t.event_id),
               array_agg(t.tenant_id ORDER BY t.published_at, t.event_id),
               array_agg(t.event_type ORDER BY t.published_at, t.event_id),
               array_agg(t.payload ORDER BY t.published_at, t.event_id),
               array_agg(t.depth ORDER BY t.published_at, t.event_id),
               array_agg(t.published_at ORDER BY t.published_at, t.event_id),
               array_agg(t.order_key ORDER BY t.published_at, t.event_id),
               (SELECT count(*) FROM subscribed u WHERE u.ok IS NOT TRUE),
               (SELECT jsonb_agg(jsonb_build_object(
                           'tenant_id', u.tenant_id, 'script_id', u.script_id,
                           'event_id', u.event_id, 'event_type', u.event_type))
                FROM subscribed u WHERE u.ok IS NULL)
        INTO v_events, v_by_source, v_tenant_full, v_exec, v_event, v_tscript, v_tenant, v_type,
             v_payload, v_depth, v_published, v_key, v_filtered, v_filter_errors
        FROM targets t JOIN delivered d ON d.execution_id = t.execution_id;
    END IF;

    IF v_exec IS NOT NULL THEN
        -- How many of each script's new executions are reserved for this daemon: none behind
        -- older pending runs; up to the room of a script whose slots it holds; or, with slots
        -- of the script free, taken now (lock first, then count: the count's snapshot then
        -- includes every earlier starter's commit).
        FOR r IN SELECT u.s, count(*)::int AS n FROM unnest(v_tscript) WITH ORDINALITY u(s, i)
                 GROUP BY u.s ORDER BY min(u.i) LOOP
            v_i := array_position(v_room_s, r.s);
            -- (A script with room left after steps 1 and 2 has no pending run that was not
            -- locked by another claim: its new runs overtake nothing.)
            CONTINUE WHEN v_i IS NULL AND EXISTS (SELECT 1 FROM jsrt_runs x
                                                  WHERE x.script_id = r.s AND x.state = 'pending');
            IF v_i IS NULL AND v_slot_left > 0
               AND pg_try_advisory_xact_lock(jsrt_run_lock(r.s)) THEN
                v_free := LEAST(COALESCE(jsrt_free_slots(r.s), 0), p_per_script, v_slot_left);
                SELECT s.tenant_id INTO v_owner FROM scripts s WHERE s.id = r.s;
                IF v_owner IS NULL THEN  -- deleted meanwhile: nothing to lease
                    v_free := 0;
                ELSIF v_free > 0 AND p_tenant_slots IS NOT NULL THEN
                    v_free := LEAST(v_free, p_tenant_slots - COALESCE(
                        (SELECT sum(l.slots) FROM jsrt_leases l
                         WHERE l.daemon_id = p_daemon AND l.tenant_id = v_owner), 0));
                END IF;
                IF v_free > 0 THEN
                    INSERT INTO jsrt_leases (script_id, daemon_id, tenant_id, slots)
                    VALUES (r.s, p_daemon, v_owner, v_free)
                    ON CONFLICT (script_id, daemon_id)
                        DO UPDATE SET slots = jsrt_leases.slots + EXCLUDED.slots;
                    v_grant_s := v_grant_s || r.s;
                    v_grant_n := v_grant_n || v_free;
                    v_slot_left := v_slot_left - v_free;
                    v_room_s := v_room_s || r.s;
                    v_room_n := v_room_n || v_free * v_reserve;
                    v_i := cardinality(v_room_s);
                END IF;
            END IF;
            CONTINUE WHEN v_i IS NULL;
            v_n := LEAST(v_room_n[v_i], r.n);
            CONTINUE WHEN v_n <= 0;
            v_room_n[v_i] := v_room_n[v_i] - v_n;
            v_res_s := v_res_s || r.s;
            v_res_n := v_res_n || v_n;
        END LOOP;

        WITH t AS (
            -- a keyed run (per-key ordering) is never reserved here: it is queued 'pending',
            -- and reserved in its key's turn by a claim's refill or grant (jsrt_key_turn)
            SELECT u.*, (u.order_key IS NULL
                         AND count(*) FILTER (WHERE u.order_key IS NULL)
                                 OVER (PARTITION BY u.script_id ORDER BY u.i)
                             <= COALESCE(f.n, 0)) AS reserved
            FROM unnest(v_exec, v_event, v_tscript, v_tenant, v_type, v_payload, v_depth,
                        v_published, v_key)
                 WITH ORDINALITY AS u(execution_id, event_id, script_id, tenant_id, event_type,
                                      payload, depth, published_at, order_key, i)
            LEFT JOIN unnest(v_res_s, v_res_n) AS f(script_id, n) ON f.script_id = u.script_id
        ),
        execs AS (
            -- started_at is NOT NULL in the seed: it is set again when the run really starts
            INSERT INTO script_executions
                (id, script_id, tenant_id, status, trigger_type, trigger_data, input, started_at)
            SELECT t.execution_id, t.script_id, t.tenant_id, 'pending', 'event',
                   jsonb_build_object('type', 'event', 'event_id', t.event_id,
                                      'event_type', t.event_type, 'published_at', t.published_at,
                                      'attempt', 1, 'depth', t.depth),
                   t.payload, NOW()
            FROM t
        ),
        runs AS (
            -- created_at orders a script's queue: the claim's time plus the event's place in
            -- the claim, in microseconds, so that runs fanned out together keep their order
            INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, event_id, state,
                                   daemon_id, created_at, order_key, input_bytes)
            SELECT t.execution_id, t.tenant_id, t.script_id, t.event_id,
                   CASE WHEN t.reserved THEN 'reserved' ELSE 'pending' END,
                   CASE WHEN t.reserved THEN p_daemon END,
                   -- a keyed run's place in its key's order is its event's publish time:
                   -- two claims' NOW()s need not follow the events' order (SKIP LOCKED)
                   CASE WHEN t.order_key IS NOT NULL THEN t.published_at
                        ELSE NOW() + make_interval(secs => t.i / 1e6) END, t.order_key,
                   pg_column_size(t.payload)
            FROM t
        )
        SELECT COALESCE(array_agg(t.execution_id ORDER BY t.i) FILTER (WHERE t.reserved), '{}'),
               count(*) FILTER (WHERE NOT t.reserved)
        INTO v_got, v_queued FROM t;
        v_ids := v_ids || v_got;
    END IF;

    -- The reserved runs, as the daemon executes them (in the order reserved: oldest first
    -- within each script). The new executions were inserted by this statement's own CTEs,
    -- which a later query of the same function sees.
    WITH picked AS MATERIALIZED (
        SELECT w.i, e.id, e.tenant_id, e.script_id, r.source_version,
               s.resource_limits::text AS limits, e.input::text AS input,
               e.trigger_type::text AS trigger_type, e.trigger_data::text AS trigger_data,
               r.event_id, r.dead_letter_id,
               COALESCE((e.trigger_data->>'depth')::int, 0) AS depth, s.name
        FROM unnest(v_ids) WITH ORDINALITY AS w(id, i)
        JOIN jsrt_runs r ON r.execution_id = w.id
        JOIN script_executions e ON e.id = r.execution_id AND (e.tenant_id = r.tenant_id) IS TRUE
        JOIN scripts s ON s.id = e.script_id AND (s.tenant_id = e.tenant_id) IS TRUE
        -- rows by primary key only, whatever the statistics say (see complete_runs)
        WHERE r.execution_id = ANY (v_ids) AND e.id = ANY (v_ids)
    ),
    versions AS MATERIALIZED (
        -- each version's source and digest once, however many of its runs the claim holds
        -- (MATERIALIZED: inlined, the expressions would be evaluated for every run), and its
        -- first run in the claim. A replay or a dead letter's retry may run an earlier
        -- version (#19; NULL: the current one).
        SELECT k.script_id, k.source_version, k.first_i, COALESCE(v.source, s.source) AS source,
               CASE WHEN v.source IS NULL THEN COALESCE(d.digest, md5(s.source))
                    ELSE md5(v.source) END AS digest
        FROM (SELECT p.script_id, p.source_version, min(p.i) AS first_i
              FROM picked p GROUP BY p.script_id, p.source_version) k
        JOIN scripts s ON s.id = k.script_id
        LEFT JOIN script_versions v
          ON v.script_id = k.script_id AND v.version_number = k.source_version
        LEFT JOIN jsrt_script_digests d ON d.script_id = k.script_id
    ),
    shipped AS (
        -- the run that brings each version's source: the first of its digest (two
        -- source_versions may be one text), unless the caller holds it; every run when the
        -- caller names nothing (version 3)
        SELECT x.script_id, x.source_version, x.source, x.digest,
               CASE WHEN p_known_scripts IS NULL THEN NULL
                    WHEN EXISTS (SELECT 1 FROM unnest(p_known_scripts, p_known_digests)
                                     AS u(script_id, digest)
                                 WHERE u.script_id = x.script_id AND u.digest = x.digest)
                    THEN 0
                    ELSE min(x.first_i) OVER (PARTITION BY x.script_id, x.digest) END AS ships
        FROM versions x
    )
    SELECT COALESCE(array_agg(ROW(
               p.id, p.tenant_id, p.script_id,
               CASE WHEN x.ships IS NULL OR x.ships = p.i THEN x.source END,
               x.digest, p.limits, p.input, p.trigger_type, p.trigger_data, p.event_id,
               p.dead_letter_id, p.depth, p.name
           )::jsrt_run_v2 ORDER BY p.i), '{}')
    INTO v_out.runs
    FROM picked p
    JOIN shipped x ON x.script_id = p.script_id
                  AND x.source_version IS NOT DISTINCT FROM p.source_version;

    v_out.lease_scripts := v_grant_s;
    v_out.lease_slots := v_grant_n;
    v_out.lost_scripts := v_lost;
    v_out.events := v_events;
    v_out.created := COALESCE(cardinality(v_exec), 0);
    v_out.queued := v_queued;
    v_out.by_source := v_by_source;
    -- (a script cut at its budget has more runs to reserve: the daemon must not take it dry)
    v_out.more := v_tenant_full OR (p_event_limit > 0 AND v_events >= p_event_limit)
                  OR cardinality(v_cut) > 0;
    v_out.waiting := EXISTS (SELECT 1 FROM jsrt_runs x WHERE x.state = 'pending');
    v_out.filtered := v_filtered;
    v_out.filter_errors := COALESCE(v_filter_errors, '[]');
    RETURN v_out;
END
$$;

-- Version 4, as released: version 5 without a cap of slots per tenant.
CREATE OR REPLACE FUNCTION jsrt_claim_v4(
    p_daemon TEXT, p_event_limit INTEGER, p_per_tenant INTEGER, p_tenant_after UUID,
    p_slot_limit INTEGER, p_per_script INTEGER, p_script_after UUID, p_reserve INTEGER,
    p_refill_scripts UUID[], p_refill_room INTEGER[], p_pending_slots INTEGER,
    p_known_scripts UUID[], p_known_digests TEXT[], p_tenant_bytes INTEGER
) RETURNS jsrt_claim_v2
LANGUAGE sql AS $$
    SELECT jsrt_claim_v5(p_daemon, p_event_limit, p_per_tenant, p_tenant_after, p_slot_limit,
                         p_per_script, p_script_after, p_reserve, p_refill_scripts,
                         p_refill_room, p_pending_slots, p_known_scripts, p_known_digests,
                         p_tenant_bytes, NULL);
$$;

-- Version 3, as released: version 4 with every run's source.
CREATE OR REPLACE FUNCTION jsrt_claim_v3(
    p_daemon TEXT, p_event_limit INTEGER, p_per_tenant INTEGER, p_tenant_after UUID,
    p_slot_limit INTEGER, p_per_script INTEGER, p_script_after UUID, p_reserve INTEGER,
    p_refill_scripts UUID[], p_refill_room INTEGER[], p_pending_slots INTEGER
) RETURNS jsrt_claim_v2
LANGUAGE sql AS $$
    SELECT jsrt_claim_v4(p_daemon, p_event_limit, p_per_tenant, p_tenant_after, p_slot_limit,
                         p_per_script, p_script_after, p_reserve, p_refill_scripts,
                         p_refill_room, p_pending_slots, NULL, NULL, NULL);
$$;

-- Version 2, as released: version 3 with every slot it may take open to step 2 (a daemon of
-- the previous release gets exactly what it was written against).
CREATE OR REPLACE FUNCTION jsrt_claim_v2(
    p_daemon TEXT, p_event_limit INTEGER, p_per_tenant INTEGER, p_tenant_after UUID,
    p_slot_limit INTEGER, p_per_script INTEGER, p_script_after UUID, p_reserve INTEGER,
    p_refill_scripts UUID[], p_refill_room INTEGER[]
) RETURNS jsrt_claim_v2
LANGUAGE sql AS $$
    SELECT jsrt_claim_v3(p_daemon, p_event_limit, p_per_tenant, p_tenant_after, p_slot_limit,
                         p_per_script, p_script_after, p_reserve, p_refill_scripts,
                         p_refill_room, p_slot_limit);
$$;

-- Runs started now (HTTP requests, `jsrt exec`, the embedded API), many in one statement: for
-- each request i, under its script's lock (scripts locked in id order, so that two batches
-- never wait on each other in a cycle), an execution 'running' owned by p_owner (the caller's
-- lease in jsrt_daemons) when a slot is free. state: 'started' (with the run), 'full' (the
-- script is at its max_concurrent_runs) or 'missing' (no runnable script of that id in that
-- tenant). trigger data and input come as JSON text the caller checked.
-- Version 3 (#17, as jsrt_claim_v4): the digest from jsrt_script_digests, not an md5 of the
-- source per request, and a run's source only the first time its version comes in this call,
-- and never when the caller holds it (p_known_scripts/p_known_digests, in pairs; NULL: every
-- run with its source, as version 2).
CREATE OR REPLACE FUNCTION jsrt_start_now_v3(
    p_owner TEXT, p_tenants UUID[], p_scripts UUID[], p_trigger_types TEXT[],
    p_trigger_data TEXT[], p_inputs TEXT[], p_known_scripts UUID[], p_known_digests TEXT[]
) RETURNS TABLE (ord INTEGER, state TEXT, run jsrt_run_v2)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r RECORD;
    v_limits TEXT;
    v_name TEXT;
    v_digest TEXT;
    v_source TEXT;
    v_found BOOLEAN;
    v_sent TEXT[] := '{}';  -- script id || digest of the versions whose source went out
    v_last UUID;
    v_free INTEGER := 0;
    v_id UUID;
BEGIN
    -- Like a claim, a start need not wait for its WAL flush: should the database crash
    -- before it, the request fails and nothing ran that anyone was told of. The result
    -- commits durably.
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_known_scripts IS NOT NULL THEN
        SELECT COALESCE(array_agg(u.s::text || u.d), '{}') INTO v_sent
        FROM unnest(p_known_scripts, p_known_digests) AS u(s, d);
    END IF;
    FOR r IN SELECT u.* FROM unnest(p_tenants, p_scripts, p_trigger_types, p_trigger_data,
                                    p_inputs) WITH ORDINALITY
                             AS u(tenant_id, script_id, trigger_type, trigger_data, input, i)
             ORDER BY u.script_id, u.i LOOP
        ord := r.i;
        run := NULL;
        IF r.script_id IS DISTINCT FROM v_last THEN
            PERFORM pg_advisory_xact_lock(jsrt_run_lock(r.script_id));
            v_last := r.script_id;
            -- a statement of its own after the lock: its snapshot has every earlier start
            v_free := COALESCE(jsrt_free_slots(r.script_id), 0);
        END IF;
        -- not s.*: a row variable would hold the whole source, detoasted, for every request;
        -- the source only for a run that starts and whose version has not gone out
        SELECT x.limits, x.name, x.digest,
               CASE WHEN v_free > 0 AND (p_known_scripts IS NULL
                                         OR NOT (r.script_id::text || x.digest) = ANY (v_sent))
                    THEN x.source END
        INTO v_limits, v_name, v_digest, v_source
        FROM (SELECT s.resource_limits::text AS limits, s.name, s.source,
                     COALESCE(d.digest, md5(s.source)) AS digest
              FROM scripts s LEFT JOIN jsrt_script_digests d ON d.script_id = s.id
              WHERE s.id = r.script_id AND s.tenant_id = r.tenant_id
                AND s.status NOT IN ('disabled', 'archived')) x;
        v_found := FOUND;
        IF NOT v_found THEN
            state := 'missing';
        ELSIF v_free <= 0 THEN
            state := 'full';
        ELSE
            v_free := v_free - 1;
            INSERT INTO script_executions (script_id, tenant_id, status, trigger_type,
                                           trigger_data, input)
            VALUES (r.script_id, r.tenant_id, 'running', r.trigger_type,
                    COALESCE(r.trigger_data::jsonb, '{}'), COALESCE(r.input::jsonb, '{}'))
            RETURNING id INTO v_id;
            INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, state, daemon_id, started_at)
            VALUES (v_id, r.tenant_id, r.script_id, 'running', p_owner, NOW());
            state := 'started';
            IF v_source IS NOT NULL THEN
                v_sent := v_sent || (r.script_id::text || v_digest);
            END IF;
            run := ROW(v_id, r.tenant_id, r.script_id, v_source, v_digest, v_limits,
                       COALESCE(r.input, '{}'), r.trigger_type, COALESCE(r.trigger_data, '{}'),
                       NULL, NULL, 0, v_name)::jsrt_run_v2;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Version 2, as released: version 3 with every run's source.
CREATE OR REPLACE FUNCTION jsrt_start_now_v2(
    p_owner TEXT, p_tenants UUID[], p_scripts UUID[], p_trigger_types TEXT[],
    p_trigger_data TEXT[], p_inputs TEXT[]
) RETURNS TABLE (ord INTEGER, state TEXT, run jsrt_run_v2)
LANGUAGE sql AS $$
    SELECT * FROM jsrt_start_now_v3(p_owner, p_tenants, p_scripts, p_trigger_types,
                                    p_trigger_data, p_inputs, NULL, NULL);
$$;

-- n of a daemon's slots of one script given back, the lease row locked before it counts (a
-- lease at zero goes); false when the daemon holds no lease of the script.
CREATE OR REPLACE FUNCTION jsrt_release_lease(p_daemon TEXT, p_script UUID, p_n INTEGER)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    v_slots INTEGER;
BEGIN
    SELECT l.slots INTO v_slots FROM jsrt_leases l
    WHERE l.script_id = p_script AND l.daemon_id = p_daemon FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_slots > p_n THEN
        UPDATE jsrt_leases SET slots = slots - p_n
        WHERE script_id = p_script AND daemon_id = p_daemon;
    ELSE
        DELETE FROM jsrt_leases WHERE script_id = p_script AND daemon_id = p_daemon;
    END IF;
    RETURN true;
END
$$;

-- Give back p_n[i] of the slots daemon p_daemon holds of script p_scripts[i]; a lease at zero
-- goes. Statement by statement, each with its own snapshot, the lease row locked first: a
-- grant of the same script by a claim that commits meanwhile (INSERT ... ON CONFLICT adds to
-- the row) is counted, never lost. (One UPDATE and one DELETE of the row in one statement,
-- split on the snapshot's slots, lost the whole release when such a grant came in between:
-- the snapshot said "delete", the row then said "keep", and neither happened - the slots
-- stayed held, and unused, for as long as the daemon lived.)
CREATE OR REPLACE FUNCTION jsrt_release_slots_v2(p_daemon TEXT, p_scripts UUID[], p_n INTEGER[])
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
    v_released INTEGER := 0;
BEGIN
    FOR r IN SELECT x.s, x.n FROM unnest(p_scripts, p_n) AS x(s, n)
             WHERE x.n > 0 ORDER BY x.s LOOP
        CONTINUE WHEN NOT jsrt_release_lease(p_daemon, r.s, r.n);
        v_released := v_released + 1;
    END LOOP;
    RETURN v_released;
END
$$;

-- Version 3 (#17, side claims): a script whose starter lock (jsrt_run_lock) another
-- transaction holds - a claim taking slots of it right now - is passed over, never waited
-- for, and returned for the daemon to give back a moment later. Waiting on its lease row
-- could deadlock: a claim that took slots of two scripts, in its own visiting order, may hold
-- the row this release wants next while it waits for the one this release holds. Holding
-- the lock, the release meets no claim on the row (a claim takes the lock before the row).
CREATE OR REPLACE FUNCTION jsrt_release_slots_v3(p_daemon TEXT, p_scripts UUID[], p_n INTEGER[])
RETURNS UUID[]
LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
    v_later UUID[] := '{}';
BEGIN
    FOR r IN SELECT x.s, x.n FROM unnest(p_scripts, p_n) AS x(s, n)
             WHERE x.n > 0 ORDER BY x.s LOOP
        IF pg_try_advisory_xact_lock(jsrt_run_lock(r.s)) THEN
            PERFORM jsrt_release_lease(p_daemon, r.s, r.n);
        ELSE
            v_later := v_later || r.s;
        END IF;
    END LOOP;
    RETURN v_later;
END
$$;
