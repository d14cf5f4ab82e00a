"""`camtrap` command line: run, check, classify, replay, summary, fetch-model, export-model,
evaluate, bench.

Exit status 2 means the input was wrong (config, model, files): the message says what and where.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from camtrap.config.base import ConfigError
from camtrap.config.loader import load_config
from camtrap.config.models import Config, LoggingConfig, ModelConfig
from camtrap.logs import mask_text, setup_logging

if TYPE_CHECKING:
    from camtrap.inference.backend import Backend

log = logging.getLogger("camtrap")

EXIT_USAGE = 2
EXPORT_ENGINES = ("openvino", "onnxruntime")


def default_config() -> Path:
    return Path(os.environ.get("CAMTRAP_CONFIG", "config.yaml"))


def _fail(message: str) -> int:
    """Exit 2 with `message`; a password in a URL in it (a model mirror's) is masked."""
    print(f"camtrap: {mask_text(message)}", file=sys.stderr)
    return EXIT_USAGE


def _invalid(exc: ConfigError) -> int:
    """Exit 2 with every problem of the config file, one per line with its field path."""
    return _fail(f"{exc.source}: invalid configuration\n  " + "\n  ".join(exc.problems))


def _load_config(args: argparse.Namespace, *, verbose: bool = False) -> Config:
    """The --config file, read the one way every command reads it (`${VAR}` expanded, paths
    relative to the file), with logging set up from its `logging` section.

    A ConfigError goes up to `main`, which reports it with `_invalid` (exit 2, field paths).
    """
    cfg = load_config(args.config)
    _setup_logging(cfg.logging, verbose=verbose)
    return cfg


def _setup_logging(cfg: LoggingConfig, *, verbose: bool = False) -> None:
    """camtrap's one log setup (stderr, passwords masked) for every command.

    Only the daemon (`verbose`) logs at the file's level: the other commands print results
    for a person, so below WARNING only the modules named in `logging.modules` speak.
    """
    if not verbose:
        rank = logging.getLevelNamesMapping()
        cfg = cfg.model_copy(update={"level": max(cfg.level, "WARNING", key=rank.__getitem__)})
    setup_logging(cfg)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    print(f"{args.config}: OK ({len(cfg.cameras)} camera(s))")
    return 0


def _classifier(model_cfg: ModelConfig, max_batch: int = 64) -> Backend:
    """The configured inference engine; its libraries (torch) load only for commands that
    classify."""
    from camtrap.inference.factory import make_backend

    return make_backend(model_cfg, max_batch)


def cmd_run(args: argparse.Namespace) -> int:
    from camtrap.inference.checkpoint import ModelError
    from camtrap.inference.factory import load_backend
    from camtrap.service import run_daemon

    cfg = _load_config(args, verbose=True)
    try:
        backend = load_backend(cfg.model, cfg.batching.max_size)  # the first bird is not slow
    except ModelError as exc:
        return _fail(str(exc))
    try:
        code = run_daemon(cfg, backend, load_backend, args.config)
    except ValueError as exc:  # species names in visits.* that the model does not know
        return _fail(f"{args.config}: {exc}")
    except OSError as exc:
        return _fail(str(exc))
    # Stopped cleanly: everything is stored, flushed and said. Native threads that outlive
    # their Python owners (FFmpeg readers blocked in a read, library thread pools) can abort
    # the interpreter's own finalisation ("terminate called without an active exception",
    # exit -6), which systemd would count as a failure: leave without it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_fetch_model(args: argparse.Namespace) -> int:
    from camtrap.inference.checkpoint import ModelError, resolve_checkpoint

    cfg = _load_config(args)
    try:
        path = resolve_checkpoint(cfg.model, progress=True)
    except ModelError as exc:
        return _fail(str(exc))
    print(path)
    return 0


def _model_config(args: argparse.Namespace) -> ModelConfig:
    """The config file's model section when there is one, else the defaults."""
    if args.config.exists():
        model = _load_config(args).model
    else:
        _setup_logging(LoggingConfig())
        model = ModelConfig()
    if args.model is not None:
        model = model.model_copy(update={"path": args.model.resolve()})
    return model


def read_image(path: Path, size: int):
    """RGB uint8 at the model's size: greyscale, palette and RGBA are converted."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    except FileNotFoundError:
        raise OSError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise OSError(f"{path}: not an image (JPEG or PNG expected)") from None
    except OSError as exc:
        raise OSError(f"{path}: cannot read image: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8)


def cmd_classify(args: argparse.Namespace) -> int:
    import numpy as np

    from camtrap.inference.backend import predict
    from camtrap.inference.checkpoint import ModelError

    try:
        model_cfg = _model_config(args).model_copy(update={"top_k": args.top})
        classifier = _classifier(model_cfg)
    except ConfigError as exc:
        return _invalid(exc)
    except ModelError as exc:
        return _fail(str(exc))
    failed = 0
    for path in args.images:
        try:
            image = read_image(path, classifier.input_size)
        except OSError as exc:
            print(f"camtrap: {exc}", file=sys.stderr)
            failed += 1
            continue
        result = predict(classifier, image[np.newaxis])
        top = [(classifier.labels[int(i)], float(p))
               for p, i in zip(result.probs[0], result.indices[0], strict=True)]
        if args.json:
            print(
                json.dumps(
                    {
                        "file": str(path),
                        "top_k": [{"species": s, "score": round(p, 6)} for s, p in top],
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(f"{path}:")
            for species, prob in top:
                print(f"  {prob:7.2%}  {species}")
    return 1 if failed else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from camtrap.inference.checkpoint import ModelError
    from camtrap.replay import replay

    cfg = _load_config(args)
    if not args.video.is_file():
        return _fail(f"{args.video}: no such video file")
    try:
        classifier = _classifier(cfg.model, cfg.batching.max_size)
    except ModelError as exc:
        return _fail(str(exc))
    out: IO[str] = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    regions_out = open(args.regions_out, "w", encoding="utf-8") if args.regions_out else None  # noqa: SIM115
    try:
        stats = replay(cfg, classifier, args.video, out, regions_out, camera=args.camera)
    except ValueError as exc:
        return _fail(f"{args.config}: {exc}")
    except OSError as exc:  # a file OpenCV cannot open or decode
        return _fail(str(exc))
    finally:
        if args.out:
            out.close()
        if regions_out:
            regions_out.close()
    print(f"replay: {stats}", file=sys.stderr)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from camtrap.reports.files import summary_command

    return summary_command(_load_config(args), args.date, args.json)


def cmd_export_model(args: argparse.Namespace) -> int:
    """Convert the configured checkpoint for a CPU engine (into the cache, or --out)."""
    from camtrap.inference.checkpoint import ModelError
    from camtrap.inference.convert import converted_model, export_copy

    cfg = _load_config(args)
    configured = cfg.model.backend
    engine = args.backend or (configured.type if configured.type in EXPORT_ENGINES
                              else "openvino")
    stored = "int8" if engine == "openvino" and getattr(configured, "int8", False) else "fp32"
    try:
        converted = converted_model(cfg.model, engine, stored)
        folder = export_copy(converted, args.out) if args.out else converted.path
    except ModelError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = args.out or cfg.model.models_dir
        return _fail(f"{where}: cannot write the exported model: {exc}")
    print(folder)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Agreement of an engine and precision with torch fp32 on the stored best crops."""
    from camtrap.inference.checkpoint import ModelError
    from camtrap.tools.evaluate import evaluate

    cfg = _load_config(args)
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit must be at least 1, got {args.limit}")
    try:
        result = evaluate(cfg, args.backend, args.precision, args.limit)
    except ModelError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    else:
        print("\n".join(result.lines()))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from camtrap.inference.checkpoint import ModelError
    from camtrap.tools.benchmark import run_bench

    _setup_logging(LoggingConfig())  # its --config is read by run_bench, errors as below
    try:
        return run_bench(args.rest)
    except ModelError as exc:
        return _fail(str(exc))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="camtrap", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            "-c",
            type=Path,
            default=default_config(),
            help="config file (default: $CAMTRAP_CONFIG or ./config.yaml)",
        )

    sp = sub.add_parser("run", help="run the daemon")
    with_config(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("check", help="validate the config file")
    with_config(sp)
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("classify", help="top species for image files")
    with_config(sp)
    sp.add_argument("images", type=Path, nargs="+")
    sp.add_argument("--model", type=Path, help="a local checkpoint (.pt)")
    sp.add_argument("--top", type=int, default=5)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_classify)

    sp = sub.add_parser("replay", help="process a video file as a camera; events as JSON lines")
    with_config(sp)
    sp.add_argument("video", type=Path)
    sp.add_argument("--out", type=Path, help="write events here instead of stdout")
    sp.add_argument("--regions-out", type=Path,
                    help="per-frame motion boxes, regions, their tracks and which were"
                    " classified (JSONL)")
    sp.add_argument("--camera", help="camera whose settings to use (default: the first)")
    sp.set_defaults(func=cmd_replay)

    sp = sub.add_parser("summary", help="a day's summary from the database (no daemon needed)")
    with_config(sp)
    sp.add_argument("--date", help="YYYY-MM-DD, today or yesterday (default: today)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_summary)

    sp = sub.add_parser("fetch-model", help="download the configured model and print its path")
    with_config(sp)
    sp.set_defaults(func=cmd_fetch_model)

    sp = sub.add_parser("export-model", help="convert the model for openvino or onnxruntime "
                        "(labels and rgb_stats beside it) and print its folder")
    with_config(sp)
    sp.add_argument("--backend", choices=EXPORT_ENGINES,
                    help="default: model.backend when it is one of these, else openvino")
    sp.add_argument("--out", type=Path, help="copy the files here (default: only the cache "
                    "under model.models_dir/converted)")
    sp.set_defaults(func=cmd_export_model)

    sp = sub.add_parser("evaluate", help="agreement of an engine and precision with torch "
                        "fp32 on the stored best crops")
    with_config(sp)
    sp.add_argument("--backend", choices=["torch", "openvino", "onnxruntime", "auto"],
                    help="default: model.backend")
    sp.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"],
                    help="default: the engine's configured precision")
    sp.add_argument("--limit", type=int, help="the N newest crops (default: all)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("bench", help="benchmarks (see bench/)")
    sp.add_argument("what", choices=["classifier"])
    sp.add_argument("rest", nargs=argparse.REMAINDER)
    sp.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    # torch's OpenMP threads spin while waiting by default, which starves the camera threads
    # that share the cores; must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # birder imports torch's C++ extension helper, which warns on every start of a CPU-only
    # box that it found no CUDA runtime: noise in a daemon's log
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        return args.func(args)
    except ConfigError as exc:  # from _load_config, or a command's own --config (bench)
        return _invalid(exc)
    except KeyboardInterrupt:
        return 130
    finally:
        log.debug("%s took %.1f s", args.command, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
