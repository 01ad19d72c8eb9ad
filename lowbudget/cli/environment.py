"""``lowbudget doctor``: the installed stack, the device, and what will fail, before a run starts."""

from __future__ import annotations

import typer

from lowbudget.cli.common import quiet_libraries


commands = typer.Typer()


@commands.command()
def doctor() -> None:
    """Check the installed packages, the device and the operations training needs; exit 1 if any fails."""
    quiet_libraries()
    from lowbudget.doctor import device_lines, package_statuses, probes
    from lowbudget.progress import plural

    packages = package_statuses()
    typer.echo("packages (installed, range lowbudget is tested in):")
    for p in packages:
        verdict = "ok" if p.ok else ("MISSING" if p.installed is None else "OUTSIDE the tested range")
        typer.echo(f"  {p.name:<14} {p.installed or '-':<16} {p.wanted:<16} {verdict}")
    typer.echo("device:")
    for line in device_lines():
        typer.echo(f"  {line}")
    typer.echo("checks (run on a tiny model):")
    checks = probes()
    for c in checks:
        typer.echo(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    failed = [p.name for p in packages if not p.ok] + [c.name for c in checks if not c.ok]
    if failed:
        typer.echo(f"{plural(len(failed), 'problem')}: {'; '.join(failed)}. `make setup` installs the tested versions "
                   f"(requirements.lock).", err=True)
        raise typer.Exit(1)
    typer.echo("everything lowbudget needs works here")
