"""``samkit studio``: serve a project in the browser, or fill its embedding cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from samkit.cli.common import CliError, add_model_args, device


def register(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser(
        "studio", help="browser annotation server for a project directory",
        description="samkit studio PROJECT_DIR [--images DIR] | samkit studio --demo | "
                    "samkit studio precompute PROJECT_DIR")
    st.add_argument("words", nargs="*", metavar="[precompute] PROJECT_DIR",
                    help="the project directory (created if new); 'precompute' first fills "
                         "the embedding cache and exits")
    st.add_argument("--images", type=Path, default=None,
                    help="folder of images to annotate (default PROJECT_DIR/images)")
    st.add_argument("--demo", action="store_true",
                    help="make a project from bundled sample images (default dir "
                         "./samkit-studio-demo)")
    st.add_argument("--host", default="127.0.0.1",
                    help="listen address (default 127.0.0.1; others require a token)")
    st.add_argument("--port", type=int, default=8765)
    st.add_argument("--token", default=None,
                    help="access token (generated and printed for non-loopback hosts)")
    st.add_argument("--allow-host", action="append", metavar="NAME",
                    help="another host name the studio is reached by (a reverse proxy, a LAN "
                         "name); requests naming any other Host are refused")
    st.add_argument("--detector", type=Path, metavar="DIR",
                    help="a zero-shot detector folder (Grounding DINO, OWLv2): adds a 'find' "
                         "box that turns class names into candidate masks")
    st.add_argument("--clip", type=Path, metavar="DIR",
                    help="a CLIP folder: names the found masks (alone: names automatic masks)")
    add_model_args(st, model_switches=False)  # exact embeddings for its cache
    st.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samkit.studio.launch import make_demo_images, open_project, serve

    words = list(args.words)
    precompute = bool(words) and words[0] == "precompute"
    if precompute:
        words = words[1:]
    if len(words) > 1:
        raise CliError(f"expected one PROJECT_DIR, got {words}")
    if args.demo:
        project_dir = Path(words[0]) if words else Path("samkit-studio-demo")
        images = make_demo_images(project_dir / "images")
    elif not words:
        raise CliError("give a PROJECT_DIR (or --demo)")
    else:
        project_dir, images = Path(words[0]), args.images
    if images is not None and not Path(images).is_dir():
        raise CliError(f"--images {images} is not a directory")
    project, amg = open_project(project_dir, args.model, args.checkpoint, images,
                                device=device(args.device), adapter=args.adapter)
    if args.detector or args.clip:
        from samkit.pipelines import AutoLabeler, ClipLabeler, LabelConfig, TextDetector

        dev = device(args.device)
        project.labeler = AutoLabeler(
            project.predictor,
            detector=TextDetector.from_pretrained(args.detector, dev) if args.detector else None,
            clip=ClipLabeler.from_pretrained(args.clip, dev) if args.clip else None,
            config=LabelConfig(amg=dict(amg)))
    if precompute:
        from tqdm import tqdm

        n = project.worker.enqueue_missing()
        with tqdm(total=n, desc="embeddings", unit="img") as bar:
            while project.worker.status()["running"]:
                project.worker.wait(0.5)
                bar.update(project.worker.done - bar.n)
            bar.update(project.worker.done - bar.n)
        errors = project.worker.status()["errors"]
        print(f"cached {n - len(errors)} embedding(s) in {project.cache_dir}"
              + (f"; {len(errors)} failed: " + "; ".join(errors) if errors else ""))
        return 1 if errors else 0
    serve(project, args.host, args.port, args.token, amg, allow_hosts=args.allow_host or [])
    return 0
