"""The ``marrow-abm viz [SCENARIO] [--host H] [--port N]`` sub-command: serve the browser app.

``marrow_abm.cli`` hooks it in with ``add_viz_parser(subparsers)``. The scenario is checked
before the server starts, so a typo fails at once with the usual one-line error instead of in
the page. The server is Solara's (uvicorn), run in this process, on 127.0.0.1 unless told
otherwise; the URL with its port is printed before it starts.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from ..errors import MarrowError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: The app as a module name: Solara imports it as a package module (relative imports work).
APP_MODULE = "marrow_abm.viz.app"


def free_port(host: str = DEFAULT_HOST, preferred: int | None = DEFAULT_PORT) -> int:
    """``preferred`` if nothing listens on it, else a free port the OS picks."""
    for port in ((preferred,) if preferred else ()) + (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise MarrowError(f"no free port on {host}")


def server_environment(scenario: str) -> dict[str, str]:
    """Environment for the server: the scenario to show, one numba thread, no telemetry."""
    return {
        "MARROW_VIZ_SCENARIO": scenario,
        # One numba thread: spinning worker threads fight the browser for the cores.
        "NUMBA_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        # Solara reports usage to a third party unless told not to.
        "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False",
        "MPLBACKEND": "Agg",
    }


def solara_args(host: str, port: int) -> list[str]:
    """Arguments of ``solara run`` for the app."""
    return ["run", APP_MODULE, "--host", host, "--port", str(port), "--production",
            "--no-open", "--log-level", "warning"]


def cmd_viz(args: argparse.Namespace, con=None) -> int:
    """Check the scenario, print the URL, then serve until interrupted."""
    from ..scenario import load_scenario

    load_scenario(args.scenario)  # a bad name fails here, as a one-line ScenarioError
    if args.port is not None and not 0 < args.port < 65536:
        raise MarrowError(f"--port must be 1-65535 (got {args.port})")
    port = args.port if args.port is not None else free_port(args.host)
    os.environ.update(server_environment(args.scenario))
    url = f"http://{args.host}:{port}/"
    print(f"marrow-abm viz: serving scenario '{args.scenario}' at {url}  (Ctrl-C to stop)",
          flush=True)
    import solara.__main__ as solara_main

    # Solara asks PyPI for its latest version on every start; not our business, and offline
    # machines would wait for the time-out.
    solara_main._check_version = lambda: None
    try:
        solara_main.cli.main(solara_args(args.host, port), prog_name="solara",
                             standalone_mode=False)
    except KeyboardInterrupt:
        pass
    return 0


def add_viz_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``viz`` to the ``marrow-abm`` sub-commands.

    Args:
        subparsers: the object ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The ``viz`` parser (its ``func`` default is ``cmd_viz(args, con)``).
    """
    sp = subparsers.add_parser(
        "viz", help="explore a scenario live in the browser (Mesa SolaraViz)",
        description="Serve the browser app: tissue view, live plots, Step/Play/Reset, sliders.")
    sp.add_argument("scenario", metavar="SCENARIO", nargs="?", default="default",
                    help="bundled scenario name or a .toml file (default: default)")
    sp.add_argument("--host", default=DEFAULT_HOST,
                    help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    sp.add_argument("--port", type=int, default=None,
                    help=f"port (default {DEFAULT_PORT}, or a free one if that is taken)")
    sp.set_defaults(func=cmd_viz)
    return sp


def main(argv: list[str] | None = None) -> int:
    """``python -m marrow_abm.viz.cli [SCENARIO] ...``: the same as ``marrow-abm viz``."""
    parser = argparse.ArgumentParser(prog="marrow-abm viz")
    sub = parser.add_subparsers(dest="command", required=True)
    add_viz_parser(sub)
    args = parser.parse_args(["viz", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args, None)
    except MarrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
