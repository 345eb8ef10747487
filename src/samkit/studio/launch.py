"""Start samkit studio: open a project with a model, serve it, or fill its embedding cache."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any

from samkit.studio.project import Project, project_model_id

LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def open_project(project_dir: str | os.PathLike[str], model_name: str | None = None,
                 checkpoint: str | os.PathLike[str] | None = None,
                 images_dir: str | os.PathLike[str] | None = None,
                 device: str = "cpu", adapter: str | os.PathLike[str] | None = None
                 ) -> tuple[Project, dict[str, Any]]:
    """Build the model (the bundled nano unless a checkpoint is given), apply ``adapter`` (a
    fine-tuning result) if given, and open the project. The embedding cache is per model and
    adapter.

    Returns:
        The project and the automatic-mask settings recommended for the model.
    """
    from samkit.registry import amg_defaults, build_sam, resolve_weights

    choice = resolve_weights(model_name, checkpoint)
    assert choice.checkpoint is not None
    model = build_sam(choice.name, checkpoint=choice.checkpoint, device=device,
                      adapter=adapter)
    model_id = project_model_id(choice.name, choice.checkpoint, choice.bundled, adapter)
    recommended = amg_defaults(choice.name) if choice.bundled and choice.name else {}
    return Project(project_dir, model.eval(), model_id, images_dir=images_dir), recommended


def make_demo_images(folder: str | os.PathLike[str]) -> Path:
    """Fill ``folder`` with the bundled sample, a few scikit-image photographs and synthetic
    scenes (skipping files that exist)."""
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    from samkit.data.synthetic import make_scene
    from samkit.demo import ASSETS

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "sample.png").exists():
        (out / "sample.png").write_bytes((ASSETS / "sample.png").read_bytes())
    for name in ("coins", "astronaut", "coffee", "chelsea"):
        path = out / f"{name}.png"
        if not path.exists():
            Image.fromarray(np.asarray(getattr(skdata, name)())).save(path)
    for i in range(3):
        path = out / f"scene_{i}.png"
        if not path.exists():
            Image.fromarray(make_scene("test", 1000 + i, size=(384, 512)).image).save(path)
    return out


def check_host(host: str, token: str | None) -> str | None:
    """The token to enforce: the given one, or a new one for any non-loopback host."""
    if token:
        return token
    try:
        loop = host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = False
    return None if loop else secrets.token_urlsafe(18)


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> list[str] | None:
    """Host names the studio may be reached by when it listens on ``host``: loopback names,
    ``host`` itself and ``extra``; None (any, the token guards it) on every interface."""
    from samkit.studio.server import LOOPBACK_HOSTS

    if host in ("0.0.0.0", "::"):
        return None
    return [*LOOPBACK_HOSTS, host, *extra]


def serve(project: Project, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None, amg: dict[str, Any] | None = None,
          allow_hosts: list[str] | tuple[str, ...] = ()) -> None:
    """Run the server until interrupted; prints the URL to open."""
    import uvicorn

    from samkit.studio.server import create_app

    token = check_host(host, token)
    app = create_app(project, token=token, amg_defaults=amg,
                     allowed_hosts=allowed_hosts(host, allow_hosts))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    counts = project.store.counts()
    print(f"samkit studio: {project.dir} ({sum(counts[s] for s in ('todo', 'in_progress', 'done'))}"
          f" images, {counts['instances']} instances, model {project.model_id})")
    print(f"open {url}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
