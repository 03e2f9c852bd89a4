"""applications: imports from a previous portal keep their original filing moment, as data.

An application filed here has ``filed_at`` = the database clock of its own transaction (a
trigger now refuses any other value, so nothing can back-date a filing). An application
imported from the portal that kept the queue before (``import_applications_bulk``, CLI and demo
loader only, never an RPC or HTTP route) carries the filing moment recorded by that system in
``filed_at``, names its source and its reference there, and gets ``imported_at`` = the database
clock of the import, set by the trigger. The journal row of an import is
``application_imported``, stamped with the database clock like every other.

Revision ID: applications_0002
Revises: applications_0001
Create Date: 2026-11-27
"""

from typing import Sequence, Union

from alembic import op

revision: str = "applications_0002"
down_revision: Union[str, Sequence[str], None] = "applications_0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SQL = """
ALTER TABLE applications.applications
    ADD COLUMN imported_at timestamptz,
    ADD COLUMN import_source text,
    ADD COLUMN import_ref text,
    ADD CONSTRAINT applications_import_named
        CHECK ((import_source IS NULL) = (import_ref IS NULL)
               AND (import_source IS NULL) = (imported_at IS NULL)),
    ADD CONSTRAINT applications_import_not_after_import
        CHECK (imported_at IS NULL OR filed_at <= imported_at);

-- an import is idempotent by the source system's reference
CREATE UNIQUE INDEX applications_import_ref
    ON applications.applications (import_source, import_ref) WHERE import_source IS NOT NULL;

CREATE FUNCTION applications.check_filing_moment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.import_source IS NULL THEN
        -- filed here: the moment is this transaction's database clock, never a given time
        IF NEW.imported_at IS NOT NULL OR NEW.filed_at < now()
           OR NEW.filed_at > clock_timestamp() THEN
            RAISE EXCEPTION 'filed_at must be the database clock of the filing transaction'
                USING ERRCODE = 'check_violation';
        END IF;
    ELSE
        -- imported: the source system's moment is kept, the import moment is ours
        NEW.imported_at := clock_timestamp();
        IF NEW.filed_at > NEW.imported_at THEN
            RAISE EXCEPTION 'an imported filing moment cannot be later than the import'
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION applications.refuse_filing_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the filing moment and the import record of an application never change'
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER applications_filing_moment BEFORE INSERT ON applications.applications
    FOR EACH ROW EXECUTE FUNCTION applications.check_filing_moment();
CREATE TRIGGER applications_filing_moment_fixed
    BEFORE UPDATE OF filed_at, imported_at, import_source, import_ref
    ON applications.applications FOR EACH ROW
    WHEN (OLD.filed_at IS DISTINCT FROM NEW.filed_at
          OR OLD.imported_at IS DISTINCT FROM NEW.imported_at
          OR OLD.import_source IS DISTINCT FROM NEW.import_source
          OR OLD.import_ref IS DISTINCT FROM NEW.import_ref)
    EXECUTE FUNCTION applications.refuse_filing_change();
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only: no downgrade")
