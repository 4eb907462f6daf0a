"""``gpuplane audit``: the audit log's key, checkpoints, export, proofs and offline verification.

An auditor keeps the public key (``gpuplane audit key > audit.pub``) and a checkpoint
(``gpuplane audit checkpoint cp.txt``) somewhere the operator cannot change; later,
``gpuplane audit export log.jsonl`` and ``gpuplane audit verify log.jsonl --checkpoint cp.txt
--key audit.pub`` check, with no server, that every entry the checkpoint covers is still there
and unchanged. Exit codes of ``verify``: 0 the log holds, 1 something does not (each problem
printed, naming the first failing leaf or checkpoint), 2 a file cannot be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gpuplane.cli.common import TokenOpt, UrlOpt, guarded, make_client

app = typer.Typer(help="The audit log: key, checkpoints, export, proofs, offline verification.",
                  no_args_is_help=True)

KeyOpt = Annotated[list[Path] | None, typer.Option(
    "--key", help="Audit public key (PEM) from `gpuplane audit key`; repeat for keys of "
                  "earlier installations (after an import).", show_default=False)]


def _unreadable(path: Path, exc: OSError) -> typer.Exit:
    typer.echo(f"error: cannot read {path}: {exc.strerror} [gpuplane.audit.unreadable]", err=True)
    return typer.Exit(2)


@app.command("key")
@guarded
def key(url: UrlOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
        key_file: Annotated[Path | None, typer.Option(
            "--key-file", help="Read the private key file here instead of asking the server "
                               "(on the machine that runs it).", show_default=False)] = None,
        ) -> None:
    """Print the installation's audit public key (PEM)."""
    from gpuplane.governance import checkpoints

    if key_file is not None:
        typer.echo(checkpoints.public_pem(checkpoints.load_or_create_key(key_file)), nl=False)
        return
    with make_client(url, token) as client:
        keys = client.get_json("/v1/audit/key")["public_keys"]
    if not keys:
        typer.echo("error: no checkpoint has been signed yet, so no key is published "
                   "[gpuplane.audit.no_checkpoint]", err=True)
        raise typer.Exit(1)
    typer.echo(keys[-1], nl=False)


@app.command("checkpoint")
@guarded
def checkpoint(file: Annotated[Path, typer.Argument(help="Where to write the signed note.")],
               url: UrlOpt = "http://127.0.0.1:8080", token: TokenOpt = None) -> None:
    """Write the latest signed checkpoint (a C2SP tlog-checkpoint signed note) to FILE."""
    with make_client(url, token) as client:
        cp = client.get_json("/v1/audit/checkpoint")
    file.write_text(cp["note"], encoding="utf-8")
    typer.echo(f"checkpoint of {cp['size']} entries written to {file}")


@app.command("export")
@guarded
def export(file: Annotated[Path, typer.Argument(help="Where to write the JSON-lines log.")],
           url: UrlOpt = "http://127.0.0.1:8080", token: TokenOpt = None) -> None:
    """Write the whole log with its signed checkpoints to FILE (global auditor or admin)."""
    n = 0
    with make_client(url, token) as client, open(file, "wb") as out:
        for chunk in client.stream("/v1/audit/export"):
            out.write(chunk)
            n += chunk.count(b"\n")
    typer.echo(f"{n} lines written to {file}")


def _checked(fn):  # noqa: ANN001, ANN202
    """A proof or note that does not verify: the reason and exit 1, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        from gpuplane.governance import merkle, note

        try:
            return fn(*args, **kwargs)
        except (note.NoteError, merkle.ProofError) as exc:
            typer.echo(f"FAILED: {exc} [gpuplane.audit.proof_failed]", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            raise _unreadable(Path(exc.filename or "?"), exc) from None
    return wrapper


def _verifiers(keys: list[Path], notes: list[str]) -> list:  # noqa: ANN202
    """Verifiers for each key under each signer name the notes carry (the log's origin)."""
    from gpuplane.governance import note

    names = sorted({line.split(" ", 2)[1] for text in notes for line in text.splitlines()
                    if line.startswith(note.SIGNATURE_PREFIX) and line.count(" ") >= 2})
    out = []
    for path in keys:
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise _unreadable(path, exc) from None
        for name in names:
            try:
                out.append(note.verifier_from_pem(name, pem))
            except (ValueError, note.NoteError) as exc:
                typer.echo(f"error: {path} is not an Ed25519 public key in PEM ({exc}) "
                           "[gpuplane.audit.bad_key]", err=True)
                raise typer.Exit(2) from None
    return out


@app.command("verify")
def verify(file: Annotated[Path, typer.Argument(help="JSON-lines export of the audit log.")],
           checkpoint: Annotated[Path | None, typer.Option(
               "--checkpoint", help="A signed checkpoint you kept (`gpuplane audit "
                                    "checkpoint`): every entry it covers must be there, "
                                    "unchanged.", show_default=False)] = None,
           key: KeyOpt = None,
           tsa_root: Annotated[list[Path] | None, typer.Option(
               "--tsa-root", help="Trusted root (PEM) of the time-stamping authority: check "
                                  "each checkpoint's RFC 3161 timestamp.",
               show_default=False)] = None) -> None:
    """Verify an exported log offline: each entry's hash and link, each embedded checkpoint's
    signature and root (and timestamp, with --tsa-root), and the checkpoint you kept. Needs
    no server."""
    from gpuplane.governance import audit

    try:
        trusted = checkpoint.read_text(encoding="utf-8") if checkpoint is not None else None
    except OSError as exc:
        raise _unreadable(checkpoint, exc) from None
    try:
        log = audit.read_log(file)
    except OSError as exc:
        raise _unreadable(file, exc) from None
    except audit.LogFormatError as exc:
        typer.echo(f"error: {file}: {exc} [gpuplane.audit.unreadable]", err=True)
        raise typer.Exit(2) from None
    notes = [text for _, text, _ in log.checkpoints] + ([trusted] if trusted else [])
    try:
        roots = [p.read_bytes() for p in tsa_root or []]
    except OSError as exc:
        raise _unreadable(Path(exc.filename or "?"), exc) from None
    result = audit.verify_log(log, _verifiers(list(key or []), notes), trusted, roots)
    if not result.ok:
        for p in result.problems:
            typer.echo(f"FAILED: {p}", err=True)
        typer.echo(f"error: audit log in {file} does NOT verify ({len(result.problems)} "
                   "problem(s)) [gpuplane.audit.tampered]", err=True)
        raise typer.Exit(1)
    covered = max(result.checked, default=0)
    typer.echo(f"audit log verifies: {len(log.entries)} entries; {len(result.checked)} signed "
               f"checkpoint(s) checked, the largest covering {covered} entries"
               + (f"; {len(result.timestamped)} timestamp(s) verified" if roots else "")
               + ("" if trusted else "; no --checkpoint given, so a truncated tail or a "
                  "rewrite after the last embedded checkpoint cannot be ruled out"))


@app.command("prove")
@guarded
@_checked
def prove(seq: Annotated[int, typer.Argument(min=1, help="The entry's sequence number.")],
          checkpoint: Annotated[Path, typer.Option(
              "--checkpoint", help="The signed checkpoint to prove inclusion in.")],
          key: KeyOpt = None, url: UrlOpt = "http://127.0.0.1:8080",
          token: TokenOpt = None) -> None:
    """Fetch and check an inclusion proof of entry SEQ in a checkpoint you hold."""
    from gpuplane.governance import merkle, note

    text = checkpoint.read_text(encoding="utf-8")
    body, _ = note.open_note(text, _verifiers(list(key or []), [text]))
    cp = note.parse_checkpoint(body)
    with make_client(url, token) as client:
        p = client.get_json("/v1/audit/proof/inclusion", seq=seq, size=cp.size)
    merkle.verify_inclusion(bytes.fromhex(p["leaf_hash"]), seq - 1, cp.size,
                            [bytes.fromhex(h) for h in p["proof"]], cp.root_hash)
    typer.echo(json.dumps({**p, "verified": True}, indent=2))


@app.command("consistency")
@guarded
@_checked
def consistency(old: Annotated[Path, typer.Argument(help="The older signed checkpoint.")],
                new: Annotated[Path, typer.Argument(help="The newer signed checkpoint.")],
                key: KeyOpt = None, url: UrlOpt = "http://127.0.0.1:8080",
                token: TokenOpt = None) -> None:
    """Fetch and check a consistency proof: the NEW checkpoint's log extends the OLD one's."""
    from gpuplane.governance import merkle, note

    texts = [old.read_text(encoding="utf-8"), new.read_text(encoding="utf-8")]
    verifiers = _verifiers(list(key or []), texts)
    a, b = (note.parse_checkpoint(note.open_note(t, verifiers)[0]) for t in texts)
    with make_client(url, token) as client:
        p = client.get_json("/v1/audit/proof/consistency", old=a.size, new=b.size)
    merkle.verify_consistency(a.size, b.size, a.root_hash, b.root_hash,
                              [bytes.fromhex(h) for h in p["proof"]])
    typer.echo(json.dumps({**p, "verified": True}, indent=2))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audit")
