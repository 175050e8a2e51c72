"""The ``ledgerbridge`` command. Sub-commands live next to the code they drive."""

from __future__ import annotations

import typer

from ledgerbridge import __version__
from ledgerbridge.bus.cli import bus_app
from ledgerbridge.config.cli import config_app, init_command
from ledgerbridge.contracts import contracts_app
from ledgerbridge.flows.alerts import alerts_app
from ledgerbridge.flows.billing_cli import billing_app
from ledgerbridge.flows.cli import audit_app, dlq_app, ingest, periods_app, post
from ledgerbridge.flows.recon_runs import reconcile_command
from ledgerbridge.flows.schedules_cli import backfill, schedules_app
from ledgerbridge.flows.stewardship_cli import drift_app, stewardship_app
from ledgerbridge.flows.worker import worker_app
from ledgerbridge.samplefirm.cli import demo_app
from ledgerbridge.service.cli import serve, tokens_app
from ledgerbridge.testing.sandbox_cli import sandbox_command

app = typer.Typer(
    name="ledgerbridge",
    help="Keeps PSA delivery systems and ERP finance systems in step: time -> cost -> invoice -> ledger.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(contracts_app, name="contracts", help="Export and compare the canonical contracts (JSON Schema).")
app.add_typer(config_app, name="config", help="Validate a configuration file.")
app.command("init", help="Write a commented starter configuration.")(init_command)
app.add_typer(demo_app, name="demo", help="The sample consulting firm and the embedded main job.")
app.command("ingest", help="Read a source into the inbox and run the transactional flow.")(ingest)
app.command("post", help="Run the posting run of one legal entity and period.")(post)
app.add_typer(periods_app, name="periods")
app.add_typer(dlq_app, name="dlq")
app.add_typer(audit_app, name="audit")
app.add_typer(billing_app, name="billing")
app.add_typer(stewardship_app, name="stewardship")
app.add_typer(drift_app, name="drift")
app.command("serve", help="Run the HTTP API (webhooks, admin API, metrics) and the worker.")(serve)
app.add_typer(tokens_app, name="tokens")
app.add_typer(worker_app, name="worker", help="Distributed mode: run a worker (--executor-id), enqueue months.")
app.add_typer(bus_app, name="bus", help="NATS JetStream event ingest: set-up, status, publishing.")
app.add_typer(schedules_app, name="schedules")
app.command("backfill", help="Re-run past windows of a flow without moving live cursors.")(backfill)
app.command("reconcile", help="Reconcile PSA vs ledger vs mart; results stored for trends.")(reconcile_command)
app.add_typer(alerts_app, name="alerts", help="Business metrics and alert rules.")
app.command("sandbox", help="Run a protocol-faithful sandbox of a SaaS system (`sandbox list`).")(sandbox_command)


@app.command("version")
def version() -> None:
    """Print the ledgerbridge version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
