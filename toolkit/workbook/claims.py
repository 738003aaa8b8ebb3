"""A chapter's key statements, checked against the numbers the chapter just measured.

Prose can drift from the measurements; a claim cannot. Each chapter states its key
results as claims::

    toolkit.workbook.claims.claim("bf16 halves the file", bf16_bytes <= 0.51 * fp32_bytes,
                         evidence=f"{bf16_bytes:,} vs {fp32_bytes:,} bytes", chapter="01", smoke=SMOKE)

What happens when a claim does not hold depends on who runs the chapter:

- under the runner (``make workbook``, CI), which sets ``WORKBOOK_ENFORCE_CLAIMS=1``, a full-mode
  claim that does not hold stops the run with ``ClaimFailed``: the workbook must not publish a
  statement its own numbers contradict;
- in a reader's own Jupyter session the chapter prints a clear notice (what was expected, what
  this machine measured, why that can happen) and goes on: a slower or different laptop is not
  the reader's mistake;
- in smoke mode (tiny data, a barely trained model) the verdict is printed, never enforced.

Speed depends on the machine, so speed claims are stated for the CPU features that cause
them (``speed_claim`` and ``SPEED_EXPECTATIONS``) and judged on an A/B-interleaved ratio
(``toolkit.measure.compare_latency``): on a CPU without the feature the claim does not apply,
and a ratio measured while other processes were busy (or whose rounds straddle the threshold)
is reported as inconclusive, with the load and the spread, instead of failing.

Every verdict is written to ``build/results/claims/<chapter>.json`` for the report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from toolkit import artifacts, runtime

ENFORCE_ENV = "WORKBOOK_ENFORCE_CLAIMS"
# A speed measurement taken while other processes used more than this share of the machine's CPU
# time is not evidence either way (toolkit.measure.SpeedComparison.other_load).
BUSY_LOAD = 0.15


class ClaimFailed(AssertionError):
    """A chapter's key statement is contradicted by its own full-mode measurements."""


def enforcing() -> bool:
    """True when a failed full-mode claim must stop the run (the runner sets WORKBOOK_ENFORCE_CLAIMS=1)."""
    return os.environ.get(ENFORCE_ENV) == "1"


def _claims_file(chapter: str, results_dir: Path | None) -> Path:
    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    return folder / "claims" / f"{chapter}.json"


def _save(entry: dict, results_dir: Path | None) -> None:
    path = _claims_file(entry["chapter"], results_dir)
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries = [e for e in entries if e["statement"] != entry["statement"]]
    entries.append(entry)
    artifacts.write_text(path, json.dumps(entries, indent=2))


NOTICE = {
    "en": {"title": "Notice: this run did not confirm one of the chapter's statements", "statement": "statement",
           "measured": "measured here",
           "enforced": "The chapter goes on. Under `make workbook` (the runner) this statement is enforced and would stop the run.",
           "not_enforced": "The chapter goes on; the runner records such a measurement as inconclusive, not as a failure.",
           "default_why": "Numbers differ between machines and runs; compare with the reference range in the lesson plan.",
           "busy": "Other programs used {load:.0%} of this machine's CPU time during the measurement. Sharing cores with them "
                   "slows every parallel step of PyTorch unevenly, which changes the ratio itself, not only its noise. Close "
                   "other programs and rerun the cell. ",
           "straddles": "The per-round ratios spread from {p10:.2f}x to {p90:.2f}x (p10-p90), across the threshold: the timing "
                        "was disturbed. Close other programs and rerun the cell. "},
    "zh": {"title": "通知：本次运行没有证实本章的一条陈述", "statement": "陈述（英文，与报告一致）", "measured": "本机测得",
           "enforced": "本章继续运行。在 `make workbook`（运行器）下，这条陈述会被强制检查，不成立就会停止运行。",
           "not_enforced": "本章继续运行；运行器把这样的测量记为“无定论”，而不是失败。",
           "default_why": "不同机器、不同运行的数字会有差别；请对照教案给出的参考范围。",
           "busy": "测量期间，其他程序占用了本机 {load:.0%} 的 CPU 时间。与它们共享核心会不均匀地拖慢 PyTorch 的每个并行步骤，"
                   "改变的是比值本身，而不只是噪声。请关闭其他程序后重新运行本单元。",
           "straddles": "各轮比值分布在 {p10:.2f}x 到 {p90:.2f}x 之间（p10-p90），跨过了阈值：计时受到了干扰。请关闭其他程序后重新运行本单元。"},
}


def _notice(statement: str, evidence: str, why: str, enforced: bool = True) -> str:
    words = NOTICE[runtime.language()]
    return (
        f"\n┌─ {words['title']}\n"
        f"│  {words['statement']}: {statement}\n"
        f"│  {words['measured']}: {evidence}\n"
        f"│  {why}\n"
        f"│  {words['enforced' if enforced else 'not_enforced']}\n"
        "└─"
    )


def claim(
    statement: str,
    holds: bool,
    *,
    evidence: str,
    chapter: str,
    smoke: bool,
    results_dir: Path | None = None,
    why: str | None = None,
) -> bool:
    """Check ``statement``: record its verdict; if it does not hold in full mode, raise ``ClaimFailed``
    under the runner, or print a notice (with ``why``; by default, that machines differ) in a reader's session,
    in the language ``toolkit.workbook.exercises.language`` chose."""
    holds = bool(holds)
    why = NOTICE[runtime.language()]["default_why"] if why is None else why
    if holds:
        verdict, mark = "holds", "✔"
    elif smoke:
        verdict, mark = "does not hold (smoke run, not enforced)", "•"
    elif enforcing():
        verdict, mark = "FAILED", "✘"
    else:
        verdict, mark = "does not hold on this machine (notice, not enforced outside the runner)", "⚠"
    _save({"chapter": chapter, "statement": statement, "verdict": verdict, "evidence": evidence, "smoke": smoke}, results_dir)
    print(f"{mark} claim {verdict}: {statement} [{evidence}]")
    if not holds and not smoke:
        if enforcing():
            raise ClaimFailed(f"chapter {chapter}: {statement!r} does not hold: {evidence}")
        print(_notice(statement, evidence, why))
    return holds


# ----------------------------------------------------------------------------- speed claims
@dataclass(frozen=True)
class SpeedExpectation:
    """What speed ratio (baseline time / candidate time) a comparison should reach, by CPU feature.

    ``tiers`` pairs a CPU feature (as ``toolkit.measure.hardware().features`` names it; ``""``
    means any CPU) with the threshold that applies when the CPU has it; the first tier whose
    feature is present decides. ``direction`` is ``"at least"`` (the candidate is this much
    faster) or ``"at most"`` (the candidate is not faster than this).
    """

    what: str
    tiers: tuple[tuple[str, float], ...]
    direction: str
    why: str
    why_zh: str = ""  # ``why`` in Chinese, for a reader who chose language("zh")

    def reason(self) -> str:
        """``why`` in the current language."""
        return self.why_zh if runtime.language() == "zh" and self.why_zh else self.why

    def threshold_for(self, features: Sequence[str]) -> tuple[str, float] | None:
        for feature, threshold in self.tiers:
            if feature == "" or feature in features:
                return feature, threshold
        return None


# The speed statements the chapters make, with the thresholds they are held to. The tiers come
# from the machines the workbook has been run on (lessons/README.md lists them): Intel Xeons with
# AMX (bf16 about 3.5x fp32, int8 dynamic 2.2-2.4x) and AMD EPYCs with AVX512-VNNI/BF16 and no AMX
# (bf16 1.7-3.0x). tests/workbook/test_claims.py feeds each one the other machines' measurements.
SPEED_EXPECTATIONS: dict[str, SpeedExpectation] = {
    "bf16-vs-fp32": SpeedExpectation(
        what="bf16 is faster than fp32 at batch 64",
        tiers=(("amx_bf16", 2.0), ("avx512_bf16", 1.3)),
        direction="at least",
        why="bf16 matrix products run natively only with AMX (matrix tiles) or AVX512-BF16 (vector dot products); "
        "without them bf16 values are widened to fp32 for every product.",
        why_zh="只有 AMX（矩阵分块单元）或 AVX512-BF16（向量点积）才能原生计算 bf16 矩阵乘法；没有它们，每次乘法前 bf16 数值都要先扩展成 fp32。",
    ),
    "int8-dynamic-vs-fp32": SpeedExpectation(
        what="per-channel dynamic int8 is faster than fp32 at batch 64",
        tiers=(("amx_int8", 1.6), ("avx512_vnni", 1.6), ("avx_vnni", 1.4)),
        direction="at least",
        why="int8 matrix products are fast with VNNI (int8 dot products into int32) or AMX; without them the "
        "int8 kernels gain little over fp32.",
        why_zh="有 VNNI（int8 点积累加到 int32）或 AMX 时，int8 矩阵乘法才快；没有它们，int8 内核比 fp32 快不了多少。",
    ),
    "fast-training-vs-plain": SpeedExpectation(
        what="the fast training loop (length buckets, cached teacher outputs, bf16 autocast where the CPU has bf16 hardware) "
        "takes training steps faster than the plain loop",
        tiers=(("amx_bf16", 2.0), ("avx512_bf16", 2.0), ("", 1.2)),  # 2.6-3.3x on a 2-core EPYC with AVX512-BF16 (KD steps, batch 32)
        direction="at least",
        why="buckets cut the padded tokens, the cache removes the teacher's forward pass from every step, and bf16 matrix "
        "products run natively only with AMX or AVX512-BF16; without them only the first two help.",
        why_zh="分桶减少了填充的 token，缓存省掉了每一步里教师模型的前向计算，而 bf16 矩阵乘法只有在 AMX 或 AVX512-BF16 上才原生运行；没有它们时只有前两项起作用。",
    ),
    "masked-vs-dense": SpeedExpectation(
        what="a model whose weights are masked to 50% zeros is not faster than the dense model",
        tiers=(("", 1.1),),
        direction="at most",
        why="a mask leaves the matrices dense: the same products run, zeros included, on any CPU.",
        why_zh="掩码不改变矩阵的稠密形状：在任何 CPU 上，运行的仍是同样的乘法，零也一起乘。",
    ),
    "csr-vs-dense-at-50": SpeedExpectation(
        what="torch.sparse.mm with a 50%-sparse CSR weight is slower than the dense product",
        tiers=(("", 1.0),),
        direction="at most",
        why="a CSR kernel reads an index for every non-zero and loses the dense kernel's blocking and vector units; "
        "at 50% sparsity it still does half the multiply-adds, far less efficiently.",
        why_zh="CSR 内核要为每个非零元素读取一个索引，也失去了稠密内核的分块和向量单元；在 50% 稀疏度下它仍做一半的乘加，而且效率低得多。",
    ),
    "structured-half-vs-fp32": SpeedExpectation(
        what="a MiniLM keeping half the encoder's linear multiply-adds (heads and FFN neurons removed) is faster than fp32 at batch 64",
        tiers=(("", 1.7),),  # measured 1.79-1.90x (four runs) on a 2-core Xeon: 1.8 would sit inside the spread
        direction="at least",
        why="the encoder's matrix products shrink to half on any CPU; embeddings, layer norms and the classifier do not, "
        "so the ratio stays below the predicted 2x.",
        why_zh="在任何 CPU 上，编码器的矩阵乘法都缩小到一半；词嵌入、层归一化和分类器不缩小，所以比值达不到预测的 2 倍。",
    ),
    "structured-quarter-vs-fp32": SpeedExpectation(
        what="a MiniLM keeping a quarter of the encoder's linear multiply-adds is faster than fp32 at batch 64",
        tiers=(("", 2.8),),
        direction="at least",
        why="the encoder's matrix products shrink to a quarter on any CPU; the parts that do not shrink keep the ratio below 4x.",
        why_zh="在任何 CPU 上，编码器的矩阵乘法都缩小到四分之一；不缩小的部分使比值低于 4 倍。",
    ),
    "structured-half-bf16-vs-bf16": SpeedExpectation(
        what="cast to bf16, the half MiniLM is faster than the bf16 baseline at batch 64",
        tiers=(("amx_bf16", 1.5), ("avx512_bf16", 1.6)),  # AMX: 1.65x measured (p10 1.52) on a 2-core Xeon
        direction="at least",
        why="with native bf16 products the matrix products still halve; with AMX they are so fast that the parts that do "
        "not shrink (layer norms, softmax, GELU, embeddings) take a larger share of the time.",
        why_zh="有原生 bf16 乘法时，矩阵乘法仍然减半；有 AMX 时矩阵乘法快到不缩小的部分（层归一化、softmax、GELU、词嵌入）占去更大份额的时间。",
    ),
    "openvino-int8-vs-fp32": SpeedExpectation(
        what="OpenVINO with NNCF static int8 runs the unpruned MiniLM at least twice as fast as PyTorch fp32 at batch 64",
        tiers=(("amx_int8", 2.0), ("avx512_vnni", 2.0), ("avx_vnni", 1.5)),  # 3.7-4.0x (2-core AMX Xeon, four runs), 4.7-6.5x (Zen 5 EPYC, planning)
        direction="at least",
        why="static int8 products need int8 dot products (VNNI) or AMX tiles; the engine also fuses the operators "
        "that eager PyTorch runs one at a time.",
        why_zh="静态 int8 乘法需要 int8 点积指令（VNNI）或 AMX 分块单元；推理引擎还会把即时执行（eager）模式的 PyTorch 逐个运行的算子融合起来。",
    ),
    "pipeline-final-vs-fastest-anchor": SpeedExpectation(
        what="chapter 9's final model (pruned, distilled, int8 in OpenVINO) is faster than the fastest unpruned anchor at batch 64",
        tiers=(("", 1.8),),  # 2.05-2.13x in four runs on a 2-core AMX Xeon (p10 1.91-1.99), against OpenVINO in bf16
        direction="at least",
        why="the pruned encoder keeps about a third of the linear multiply-adds and the same engine runs both models, "
        "so the saving carries over on any CPU; the parts that do not shrink keep it below 3x.",
        why_zh="剪枝后的编码器只保留约三分之一的线性层乘加，而且两个模型由同一个引擎运行，所以这份节省在任何 CPU 上都成立；不缩小的部分使它低于 3 倍。",
    ),
    "pipeline-final-vs-fastest-anchor-batch1": SpeedExpectation(
        what="chapter 9's final model is faster than the fastest unpruned anchor at batch 1",
        tiers=(("", 1.1),),  # 1.28-1.39x in four runs on a 2-core AMX Xeon (rounds p10 1.08-1.23): 1.3 would sit inside the spread
        direction="at least",
        why="at batch 1 the products are small and the fixed cost of every operator and call weighs more; pruning removes "
        "multiply-adds but not operators, so the gain is smaller than at batch 64.",
        why_zh="批大小为 1 时矩阵很小，每个算子和每次调用的固定开销占比更大；剪枝减少的是乘加，而不是算子，所以收益比批大小 64 时小。",
    ),
    "int4-decode-vs-fp32": SpeedExpectation(
        what="one greedy decode step of SmolLM2-135M with int4 weights (PyTorch's CPU int4 kernel, bf16 activations) is faster "
        "than the same step in fp32",
        tiers=(("avx512f", 1.3),),  # 2.3-3.4x on a 2-core EPYC with AVX512-BF16 (chapter 10's runs while it was written)
        direction="at least",
        why="a batch-1 decode step reads every weight once, so it is bound by memory traffic: int4 reads an eighth of fp32's "
        "bytes, and PyTorch's int4 CPU kernel unpacks the codes with AVX-512; without AVX-512 it takes a slower path.",
        why_zh="批大小为 1 的解码每一步都把每个权重读一遍，所以受内存带宽限制：int4 读取的字节只有 fp32 的八分之一，"
        "而 PyTorch 的 int4 CPU 内核用 AVX-512 解包编码；没有 AVX-512 时它走较慢的路径。",
    ),
    "filters-pruned-vs-resnet": SpeedExpectation(
        what="the digits ResNet with half the channels of every group removed is faster than the unpruned one (256 images)",
        tiers=(("", 1.5),),
        direction="at least",
        why="halving the channels on both sides of a 3x3 convolution leaves a quarter of its multiply-adds on any CPU.",
        why_zh="3x3 卷积两侧的通道各减半后，它的乘加只剩四分之一，在任何 CPU 上都是如此。",
    ),
}


def speed_claim(
    key: str,
    comparison,
    *,
    features: Sequence[str],
    chapter: str,
    smoke: bool,
    results_dir: Path | None = None,
) -> str:
    """Judge an A/B ``comparison`` (``toolkit.measure.SpeedComparison``) against ``SPEED_EXPECTATIONS[key]``.

    Returns the verdict: ``"holds"``, ``"not applicable"`` (the CPU lacks the feature that
    causes the speed-up: recorded and said, never a failure), ``"inconclusive"`` (the median
    misses the threshold but the rounds' spread straddles it, as on a busy machine: a notice
    with the spread, never a failure) or ``"does not hold"`` (the whole spread is on the wrong
    side: ``ClaimFailed`` under the runner, a notice in a reader's session).
    """
    if key not in SPEED_EXPECTATIONS:
        raise ValueError(f"key {key!r} is not a known speed claim; accepted: {', '.join(SPEED_EXPECTATIONS)}")
    expectation = SPEED_EXPECTATIONS[key]
    tier = expectation.threshold_for(features)
    if tier is None:
        needed = " or ".join(f for f, _ in expectation.tiers)
        statement = f"On a CPU with {needed}, {expectation.what}"
        entry = {"chapter": chapter, "statement": statement, "smoke": smoke,
                 "verdict": f"not applicable: this CPU has no {needed}", "evidence": str(comparison)}
        _save(entry, results_dir)
        print(f"• claim not applicable on this CPU (no {needed}): {statement} [{comparison}]\n  {expectation.reason()}")
        return "not applicable"
    feature, threshold = tier
    where = f"On a CPU with {feature}" if feature else "On any CPU"
    statement = f"{where}, {expectation.what} (A/B ratio {expectation.direction} {threshold:g}x)"
    evidence = str(comparison)
    if expectation.direction == "at least":
        holds = comparison.ratio >= threshold
        straddles = comparison.ratio_p90 >= threshold
    else:
        holds = comparison.ratio <= threshold
        straddles = comparison.ratio_p10 <= threshold
    busy = (getattr(comparison, "other_load", None) or 0.0) > BUSY_LOAD
    if holds or smoke or not (straddles or busy):
        claim(statement, holds, evidence=evidence, chapter=chapter, smoke=smoke, results_dir=results_dir, why=expectation.reason())
        return "holds" if holds else "does not hold"
    words = NOTICE[runtime.language()]
    if busy:
        verdict = f"inconclusive: other processes used {comparison.other_load:.0%} of the CPU while it was timed"
        why = words["busy"].format(load=comparison.other_load)
    else:
        verdict = "inconclusive: the median misses the threshold but the rounds' spread straddles it"
        why = words["straddles"].format(p10=comparison.ratio_p10, p90=comparison.ratio_p90)
    _save({"chapter": chapter, "statement": statement, "verdict": verdict, "evidence": evidence, "smoke": smoke}, results_dir)
    print(f"⚠ claim {verdict}: {statement} [{evidence}]")
    print(_notice(statement, evidence, why + expectation.reason(), enforced=False))
    return "inconclusive"


def reset(chapter: str, results_dir: Path | None = None) -> None:
    """Forget a chapter's earlier verdicts (the runner calls this before a chapter runs)."""
    _claims_file(chapter, results_dir).unlink(missing_ok=True)


def load_claims(results_dir: Path | None = None) -> list[dict]:
    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    rows = []
    for path in sorted((folder / "claims").glob("*.json")):
        rows += json.loads(path.read_text())
    return rows


# ----------------------------------------------------------------------------- one chapter's claims
class ChapterClaims:
    """The claims of one chapter, with its number and mode filled in once.

    Every notebook needs ``claim(statement, holds, evidence)`` with its own ``CHAPTER`` and ``SMOKE``;
    this object is that function, plus ``speed`` for the speed claims::

        claim = toolkit.workbook.claims.ChapterClaims(CHAPTER, smoke=SMOKE)
        claim("fp16 halves the file", fp16_bytes <= 0.51 * fp32_bytes, f"{fp16_bytes:,} vs {fp32_bytes:,} bytes")
        claim.speed("bf16-vs-fp32", comparison, features=hardware.features)

    Taught in: chapter 1, section 9 (The chapter's claims, checked).
    """

    def __init__(self, chapter: str, smoke: bool, results_dir: Path | None = None):
        if not (isinstance(chapter, str) and len(chapter) == 2 and chapter.isdigit()):
            raise ValueError(f"chapter must be a two-digit string such as '03'; got {chapter!r}")
        self.chapter, self.smoke, self.results_dir = chapter, bool(smoke), results_dir

    def __call__(self, statement: str, holds: bool, evidence: str, **options) -> bool:
        """``claim(...)`` for this chapter (``options``: ``why``)."""
        return claim(statement, holds, evidence=evidence, chapter=self.chapter, smoke=self.smoke,
                     results_dir=self.results_dir, **options)

    def speed(self, key: str, comparison, features: Sequence[str]) -> str:
        """``speed_claim(...)`` for this chapter: the verdict for this CPU's ``features``."""
        return speed_claim(key, comparison, features=features, chapter=self.chapter, smoke=self.smoke,
                           results_dir=self.results_dir)

    def __repr__(self) -> str:
        return f"ChapterClaims(chapter={self.chapter!r}, smoke={self.smoke})"
