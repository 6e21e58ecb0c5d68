"""Run a compose service's command as the image would, without a Docker engine.

What the Dockerfile says about the container is read from it, not restated here:
its working directory, its user, its ``ENV`` and the folders ``install -d -o
<user>`` makes for that user. A :class:`Sandbox` lays out one container's file
system as that user sees it:

- every folder the image has but does not give its user (the working directory,
  ``/``, ``/home``) is mode 0555, so nothing can be created in it;
- the folders the Dockerfile makes for the user are writable; ``/tmp`` is 1777;
- the user's home does not exist (``useradd --no-create-home``).

Commands run with the sandbox's working directory and environment. When the tests
run as root, ``setpriv`` drops every capability, so root obeys the mode bits as
the image's unprivileged user would (uid 0 stands for that user; the interpreter
and the installed package stay readable, as ``pip install`` in the image made them).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Image:
    """What a Dockerfile tells about the container its image runs."""

    workdir: str
    user: str
    env: dict[str, str]
    user_dirs: tuple[str, ...]  # folders made for the user (install -d -o USER ...)
    copied: tuple[str, ...]  # sources COPY'd into the image


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _env_pairs(rest: str) -> dict[str, str]:
    parts = shlex.split(rest)
    if parts and "=" not in parts[0]:  # the legacy form: ENV KEY value
        return {parts[0]: " ".join(parts[1:])}
    return dict(p.split("=", 1) for p in parts)


def _installed_dirs(command: str, user: str) -> list[str]:
    """The folders of every ``install -d ... -o USER ... DIRS`` in a RUN command."""
    found: list[str] = []
    for step in command.split("&&"):
        words = shlex.split(step)
        if words[:1] != ["install"] or "-d" not in words:
            continue
        owner, paths, skip = None, [], False
        for i, w in enumerate(words[1:], 1):
            if skip:
                skip = False
            elif w in ("-o", "-g", "-m"):
                owner = words[i + 1] if w == "-o" else owner
                skip = True
            elif not w.startswith("-"):
                paths.append(w)
        if owner == user:
            found += paths
    return found


def read_dockerfile(path: Path) -> Image:
    workdir, user, env, copied = "/", "root", {}, []
    runs = []
    for word, rest in _instructions(path.read_text()):
        if word == "WORKDIR":
            workdir = rest
        elif word == "USER":
            user = rest
        elif word == "ENV":
            env.update(_env_pairs(rest))
        elif word == "COPY":
            copied += shlex.split(rest)[:-1]
        elif word == "RUN":
            runs.append(rest)
    dirs = [d for run in runs for d in _installed_dirs(run, user)]
    return Image(workdir, user, env, tuple(dirs), tuple(copied))


#: where the image's commands are found: this interpreter's scripts (``pip install .``
#: puts ``dropship`` there in the image), then the system's
_PATH = f"{Path(sys.executable).parent}:/usr/bin:/bin"


class Sandbox:
    """One container's file system under ``root``, as the image's user may use it."""

    def __init__(self, root: Path, image: Image) -> None:
        self.root, self.image = root, image
        self.workdir = self.path(image.workdir)
        self.home = self.path(f"/home/{image.user}")
        tmp = self.path("/tmp")
        mine = {self.path(d) for d in image.user_dirs}
        made = {self.workdir, self.home.parent, tmp, *mine}
        for folder in made:
            folder.mkdir(parents=True, exist_ok=True)
        tree = {p for f in made for p in (f, *f.parents) if p.is_relative_to(root)}
        for folder in tree:
            folder.chmod(0o750 if folder in mine else 0o1777 if folder == tmp else 0o555)

    def path(self, image_path: str) -> Path:
        """Where the container's ``image_path`` lies in the sandbox."""
        return self.root / image_path.lstrip("/")

    def environment(self, service_env: dict[str, str]) -> dict[str, str]:
        """The process environment: the image's ``ENV`` (paths into the sandbox), then
        the service's, plus PATH (this interpreter's scripts) and the absent home."""
        image_env = {k: str(self.path(v)) if v.startswith("/") else v
                     for k, v in self.image.env.items()}
        return {"PATH": _PATH,
                "HOME": str(self.home), "LANG": "C.UTF-8", **image_env, **service_env}

    def argv(self, command: list[str]) -> list[str]:
        """``command`` as the image's user runs it (capabilities dropped if root)."""
        exe = shutil.which(command[0], path=_PATH)
        assert exe, f"{command[0]} is not installed"
        argv = [exe, *command[1:]]
        if os.geteuid() == 0:
            argv = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *argv]
        return argv

    def start(self, command: list[str], env: dict[str, str], log: Path
              ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(self.argv(command), cwd=self.workdir,
                                    env=self.environment(env), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, command: list[str], env: dict[str, str], timeout_s: float
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(command), cwd=self.workdir, env=self.environment(env),
                              capture_output=True, text=True, timeout=timeout_s, check=False)

    def remove(self) -> None:
        for folder in (self.root, *self.root.rglob("*")):
            if folder.is_dir() and not folder.is_symlink():
                folder.chmod(0o755)
        shutil.rmtree(self.root, ignore_errors=True)
