"""``gpuplane attestation verify KIND EVIDENCE``: appraise attestation evidence offline.

Exit 0 when the evidence passes, 1 when it does not (each reason printed), 2 when an
input cannot be read or is not what KIND expects (one line, no traceback).
Trust anchors are never taken from the evidence: ``--root`` names them and is
required where the vendor root is not built in (sev-snp, nvidia-cc).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from gpuplane import __version__

if TYPE_CHECKING:
    from gpuplane.governance.attestation.base import Appraisal

app = typer.Typer(help="Attestation: appraise evidence from confidential-computing "
                       "hardware, offline.", no_args_is_help=True)


class Kind(str, Enum):
    SEV_SNP = "sev-snp"
    TDX = "tdx"
    NVIDIA_CC = "nvidia-cc"


ROOT_REQUIRED = {Kind.SEV_SNP: "the AMD ARK (e.g. AMD's ask_ark bundle for the CPU family)",
                 Kind.NVIDIA_CC: "NVIDIA's device identity root CA"}


class InputError(Exception):
    """An input the command cannot use; printed as one line, exit 2."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--at: {text!r} is not an ISO 8601 date-time") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _parse_nonce(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InputError(f"--nonce: {text!r} is not hex") from None


@app.command("verify")
def verify(
    kind: Kind = typer.Argument(..., help="Evidence kind: sev-snp, tdx or nvidia-cc."),
    evidence: Path = typer.Argument(..., help="The evidence: SNP ATTESTATION_REPORT (binary), "
                                    "TDX quote (binary), NVIDIA SPDM request+response "
                                    "(binary or hex text)."),
    cert: list[Path] | None = typer.Option(
        None, "--cert", help="Certificates from the attester, PEM or DER, repeatable. sev-snp: "
        "the VCEK or VLEK (and optionally the ASK/ASVK); nvidia-cc: the GPU's chain file "
        "(leaf first). Not used for tdx: the PCK chain is inside the quote."),
    root: list[Path] | None = typer.Option(
        None, "--root", help="Trusted root certificate(s), PEM or DER, repeatable: only "
        "self-signed ones become trust anchors; the others in the file (AMD's ASK, ASVK) "
        "help build the chain. REQUIRED for sev-snp (the AMD ARK, e.g. AMD's "
        "ask_ark bundle) and nvidia-cc (NVIDIA's device root): a root inside the evidence "
        "is never trusted by itself. Optional for tdx (default: Intel's SGX Root CA "
        "built into dcap-qvl)."),
    collateral: Path | None = typer.Option(
        None, "--collateral", help="tdx only, required: Intel collateral JSON "
        "(dcap-qvl QuoteCollateralV3, as PCCS serves it)."),
    nonce: str | None = typer.Option(
        None, "--nonce", help="Hex nonce given to the attester. Without it the evidence "
        "cannot pass (freshness unknown), though every other check still runs. sev-snp/tdx: "
        "REPORT_DATA must hold it zero-padded to 64 bytes, or its SHA-512; nvidia-cc: the "
        "32-byte SPDM nonce must hold it zero-padded."),
    at: str | None = typer.Option(
        None, "--at", help="Appraise as of this ISO 8601 time (default: now; no zone = UTC)."),
    as_json: bool = typer.Option(False, "--json", help="Print the appraisal and its EAR "
                                 "claims set as JSON."),
) -> None:
    """Appraise EVIDENCE of KIND against the given roots; exit 0 only when it passes."""
    try:
        appraisal = _appraise(kind, evidence, cert or [], root or [], collateral, nonce, at)
    except InputError as exc:
        typer.echo(f"error: {exc} [gpuplane.attestation.bad_input]", err=True)
        raise typer.Exit(2) from None
    malformed = [r for r in appraisal.reasons if r.endswith("malformed")]
    if malformed:
        typer.echo(f"error: {kind.value} input is malformed: {appraisal.details[malformed[0]]} "
                   f"[{malformed[0]}]", err=True)
        raise typer.Exit(2)
    if as_json:
        from gpuplane.governance.attestation.base import VerifierId

        ear = appraisal.to_ear(VerifierId(build=f"gpuplane {__version__}", developer="gpuplane"))
        typer.echo(json.dumps({"appraisal": appraisal.to_dict(), "ear": ear}, indent=2))
    else:
        _print_human(appraisal)
    if not appraisal.passed:
        raise typer.Exit(1)


def _appraise(kind: Kind, evidence: Path, certs: list[Path], roots: list[Path],
              collateral: Path | None, nonce: str | None, at: str | None) -> Appraisal:
    from gpuplane.governance.attestation import AppraisalPolicy, Evidence, get_verifier

    if kind in ROOT_REQUIRED and not roots:
        raise InputError(f"--root is required for {kind.value}: give {ROOT_REQUIRED[kind]}")
    if kind is Kind.TDX and collateral is None:
        raise InputError("--collateral is required for tdx: give Intel's collateral JSON")
    if kind is Kind.TDX and certs:
        raise InputError("--cert is not used for tdx: the PCK chain is inside the quote")
    if kind is not Kind.TDX and collateral is not None:
        raise InputError(f"--collateral is only used for tdx, not {kind.value}")
    now, chosen = _parse_at(at), _parse_nonce(nonce)
    root_blobs = tuple(_read(p, "root") for p in roots)
    try:
        policy = AppraisalPolicy(name="cli", trusted_roots={kind.value: root_blobs})
    except ValueError as exc:
        raise InputError(f"--root: {exc}") from None
    coll = None
    if collateral is not None:
        try:
            coll = _read(collateral, "collateral").decode()
        except UnicodeDecodeError:
            raise InputError(f"collateral {collateral} is not UTF-8 JSON") from None
    item = Evidence(kind=kind.value, raw=_read(evidence, "evidence"),
                    certificates=tuple(_read(p, "certificate") for p in certs),
                    collateral=coll, nonce=chosen)
    return get_verifier(kind.value).appraise(item, policy, now)


def _print_human(appraisal: Appraisal) -> None:
    verdict = "PASS" if appraisal.passed else "FAIL"
    typer.echo(f"{appraisal.kind}: {verdict} ({appraisal.status}), policy "
               f"{appraisal.policy_id}, as of {appraisal.appraised_at.isoformat()}")
    for key in ("measurement", "mr_td", "fwid", "chain", "status"):
        value = appraisal.claims.get(key)
        if value:
            typer.echo(f"  {key}: {' -> '.join(value) if isinstance(value, list) else value}")
    for reason in appraisal.reasons:
        typer.echo(f"  {reason}: {appraisal.details.get(reason, '')}")
    if appraisal.passed:
        typer.echo(f"  valid until {appraisal.expires_at.isoformat()}")


def register(root_app: typer.Typer) -> None:
    root_app.add_typer(app, name="attestation")
