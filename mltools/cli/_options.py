"""Options shared by many commands, as decorators."""
import click

json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print one JSON document (with schema and version keys) on stdout.",
)
