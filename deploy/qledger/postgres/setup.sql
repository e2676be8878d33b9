-- PostgreSQL role and database for qledger. Run once as a superuser, with the passwords as
-- psql variables (they do not end up in shell history if you type them at the prompt):
--
--   psql -h db.internal -U postgres -v ON_ERROR_STOP=1 \
--        -v app_password="$(systemd-ask-password 'qledger password:')" \
--        -v reader_password="$(systemd-ask-password 'qledger_reader password:')" \
--        -f deploy/qledger/postgres/setup.sql
--
-- Roles:
--   qledger         the service. Owns the database; the service creates and migrates its own
--                   tables (Alembic, at start), so it needs DDL on its schema and nothing else.
--   qledger_reader  read-only: reporting, audits, and pg_dump-based backups.
-- Tested with PostgreSQL 15 (see docs/production.md).

\set ON_ERROR_STOP on

CREATE ROLE qledger LOGIN PASSWORD :'app_password';
CREATE ROLE qledger_reader LOGIN PASSWORD :'reader_password';

CREATE DATABASE qledger OWNER qledger ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE qledger FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE qledger TO qledger;
GRANT CONNECT ON DATABASE qledger TO qledger_reader;

-- An acknowledged record (HTTP 202) must survive a crash: the service relies on the commit
-- being durable before it answers. `on` is PostgreSQL's default; pin it for this database so a
-- cluster-wide "performance" change cannot weaken it. With a synchronous standby configured
-- (synchronous_standby_names), `on` also waits for the standby's flush.
ALTER DATABASE qledger SET synchronous_commit = 'on';
-- A transaction left open by a crashed client must not hold row locks (the anchorer claims
-- outbox rows with FOR UPDATE SKIP LOCKED) forever.
ALTER DATABASE qledger SET idle_in_transaction_session_timeout = '5min';

\connect qledger

-- PostgreSQL >= 15 already denies CREATE on schema public to PUBLIC; older versions do not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO qledger;
GRANT USAGE ON SCHEMA public TO qledger_reader;

-- Tables the service creates later (as role qledger) become readable by qledger_reader.
ALTER DEFAULT PRIVILEGES FOR ROLE qledger IN SCHEMA public GRANT SELECT ON TABLES TO qledger_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE qledger IN SCHEMA public GRANT SELECT ON SEQUENCES TO qledger_reader;
-- Tables that already exist (re-running after the service started once).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO qledger_reader;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO qledger_reader;
