"""Installs the stand-in plugins where the Pulumi engine looks for installed plugins.

    python -m tests.engine.standins.install PLUGINS_DIR      (PLUGINS_DIR: $PULUMI_HOME/plugins)

The engine picks a resource plugin from PLUGINS_DIR/resource-<name>-v<version>/, at exactly the
version the program's SDK asks for (pulumi sdk/go/common/workspace/plugins.go,
SelectCompatiblePlugin: spec.Version.EQ), runs the executable pulumi-resource-<name> in it
(getPluginPath), and treats the directory as installed unless a `<dir>.partial` file exists beside
it (HasPlugin, GetPluginsFromDir); `<dir>.lock` is only held while installing. So: the directory,
its launcher, and no .partial.

The launcher is a shell script that execs this interpreter on the provider module with the
project root on PYTHONPATH, both fixed at install time, so the engine may start it from any
directory.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tests.engine.standins.common import sdk_plugin

ROOT = Path(__file__).resolve().parents[3]
# SDK package -> the stand-in module serving its provider.
PLUGINS = {
    "pulumi_gcp": "tests.engine.standins.gcp",
    "pulumiverse_time": "tests.engine.standins.time",
}


def launcher(module: str, python: str = sys.executable, root: Path = ROOT) -> str:
    return (
        "#!/bin/sh\n"
        "# Stand-in provider plugin for dicom-bq's engine tier (tests/engine/standins).\n"
        f"PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(python)} -m {module} "$@"\n'
    )


def install(plugins_dir: Path) -> list[Path]:
    """Writes each plugin; returns the executables."""
    made = []
    for package, module in PLUGINS.items():
        name, version = sdk_plugin(package)
        folder = plugins_dir / f"resource-{name}-v{version}"
        folder.mkdir(parents=True, exist_ok=True)
        for marker in (".partial", ".lock"):
            folder.with_name(folder.name + marker).unlink(missing_ok=True)
        executable = folder / f"pulumi-resource-{name}"
        executable.write_text(launcher(module))
        executable.chmod(0o755)
        made.append(executable)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugins_dir", type=Path, help="the engine's plugin directory")
    args = parser.parse_args(argv)
    for executable in install(args.plugins_dir):
        print(f"installed {executable.parent.name}: {executable}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
