"""The Docker image and compose file agree with the app's real entry point and port.

No Docker engine runs on CI machines: these tests read the files; hadolint lints the Dockerfile
in ``make lint``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _instruction(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_entry_command_runs_the_real_streamlit_entry_point_on_all_interfaces() -> None:
    cmd = json.loads(_instruction("CMD")[-1])
    assert cmd[:3] == ["streamlit", "run", "app/ui/main.py"]
    assert (ROOT / cmd[2]).is_file()
    assert "--server.address=0.0.0.0" in cmd
    port = next(int(a.split("=")[1]) for a in cmd if a.startswith("--server.port="))
    assert _instruction("EXPOSE") == [str(port)]


def test_healthcheck_probes_streamlit_health_on_the_exposed_port() -> None:
    (health,) = _instruction("HEALTHCHECK")
    port = _instruction("EXPOSE")[0]
    assert f"127.0.0.1:{port}/_stcore/health" in health


def test_image_runs_as_non_root_python_312_and_copies_every_app_folder() -> None:
    users = _instruction("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert all("python:3.12" in base for base in _instruction("FROM"))
    copied = " ".join(_instruction("COPY"))
    for folder in ("app", "inference", "pages", "assets", ".streamlit"):
        assert (ROOT / folder).exists(), folder
        assert re.search(rf"\s{re.escape(folder)}\s", copied + " "), folder


def test_weights_build_argument_uses_the_cli_that_exists() -> None:
    assert "terralens weights download" in DOCKERFILE
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["terralens"] == "app.cli:main"
    from app.cli import build_parser

    args = build_parser().parse_args(["weights", "download", "--spec", "tiny:LULC"])
    assert args.spec == "tiny:LULC"


def test_compose_uses_the_gpu_persists_runs_and_passes_the_key_as_a_secret() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    service = compose["services"]["terralens"]
    assert service["gpus"] == "all"
    port = _instruction("EXPOSE")[0]
    # No sign-in: published on the workstation only unless the operator decides otherwise.
    assert service["ports"] == [f"${{TERRALENS_BIND:-127.0.0.1}}:{port}:{port}"]
    volumes = dict(v.split(":") for v in service["volumes"])
    assert volumes["terralens-data"] == service["environment"]["TERRALENS_DATA_DIR"]
    assert volumes["terralens-hf"] == service["environment"]["HF_HOME"]
    assert "pc_subscription_key" in service["secrets"]
    assert "PC_SDK_SUBSCRIPTION_KEY" not in service["environment"]
    assert "PC_SDK_SUBSCRIPTION_KEY" not in DOCKERFILE.replace("PC_SDK_SUBSCRIPTION_KEY_FILE", "")


def test_installs_use_the_lock_of_their_python() -> None:
    """The image, make and CI install the exact versions of the lock, not a fresh resolution."""
    installs = [r for r in _instruction("RUN") if "pip install" in r and " ." in r]
    assert installs and all("-c constraints/py312.txt" in r for r in installs)
    assert (ROOT / "constraints" / "py312.txt").is_file()
    assert (ROOT / "constraints" / "py311.txt").is_file()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "LOCK  := constraints/py$(PYVER).txt" in makefile
    assert makefile.count("pip install $(PIP_LOCK)") == 2
    for lock in ("py311.txt", "py312.txt"):
        pins = dict(line.split("==") for line in (ROOT / "constraints" / lock).read_text(
            encoding="utf-8").splitlines() if line and not line.startswith("#"))
        for package in ("diffusers", "timm", "lightning", "torchgeo", "terratorch", "torch"):
            assert package in pins, (lock, package)


def test_the_app_hides_tracebacks_from_analysts() -> None:
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["client"]["showErrorDetails"] == "none"


def test_make_run_takes_a_port_and_the_readme_says_so() -> None:
    """``make run PORT=8502`` starts streamlit on that port; the README keeps two set-up
    commands and names the port option."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is missing: install it (apt-get install make)")
    for extra, port in (([], "8501"), (["PORT=8502"], "8502")):
        # Under ``make test`` the parent make's MAKEFLAGS (``-w``) would add "Entering/Leaving
        # directory" lines, so the child make runs without them.
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        dry = subprocess.run([make, "--no-print-directory", "-n", "run", *extra], cwd=ROOT,
                             capture_output=True, text=True, check=True, timeout=60, env=env)
        line = dry.stdout.strip().splitlines()[-1]
        assert line.endswith(f"streamlit run app/ui/main.py --server.port {port}"), line
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = setup.split("```bash")[1:]
    assert [b.strip().split()[:2] for b in blocks] == [["make", "run"], ["make", "test"]]
    assert "make run PORT=8502" in setup
