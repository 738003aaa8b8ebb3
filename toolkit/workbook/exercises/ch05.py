"""Chapter 5 exercises: Hutchinson's trace estimate; bits for four layers under a budget; the softened KL of distillation."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from toolkit.workbook.exercises import Exercise, Quiz, register


def hutchinson_estimate(hvp, probes: list) -> float:
    """Tr(H) ≈ mean over the probes v of vᵀ(Hv); ``hvp(v)`` returns the Hessian-vector product H v."""
    return float(sum(float(v @ hvp(v)) for v in probes) / len(probes))


def best_bits(costs: list, damages: list, budget: int) -> list:
    """One option index per layer minimising the summed damage with the summed cost at most ``budget`` (brute force
    over every combination is fine for four layers)."""
    best, best_damage = None, float("inf")
    for choice in itertools.product(*[range(len(row)) for row in costs]):
        cost = sum(row[j] for row, j in zip(costs, choice))
        damage = sum(row[j] for row, j in zip(damages, choice))
        if cost <= budget and damage < best_damage:
            best, best_damage = list(choice), damage
    return best


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> float:
    """T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)), averaged over the batch (rows)."""
    p_log = F.log_softmax(teacher_logits / temperature, dim=-1)  # (batch, labels)
    q_log = F.log_softmax(student_logits / temperature, dim=-1)
    return float(temperature**2 * (p_log.exp() * (p_log - q_log)).sum(-1).mean())


_H_DIAG = torch.diag(torch.tensor([1.0, 2.0, 3.0]))
_H_DENSE = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
_H_COUPLED = torch.tensor([[1.0, 2.0], [2.0, 1.0]])

register(
    Exercise(
        name="05.hutchinson_estimate",
        title="Exercise 5.1 (Hutchinson's trace estimate)",
        reference=hutchinson_estimate,
        cases=(
            # diagonal H: vᵀHv = Σ H_ii v_i² = 1 + 2 + 3 = 6 for any ±1 vector
            ((lambda v: _H_DIAG @ v, [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, -1.0, 1.0])]), 6.0),
            # [[2,1],[1,3]]: v = (1,1) gives 2+3+2 = 7, v = (1,-1) gives 2+3-2 = 3; mean 5 = the trace
            ((lambda v: _H_DENSE @ v, [torch.tensor([1.0, 1.0]), torch.tensor([1.0, -1.0])]), 5.0),
            # one probe on [[1,2],[2,1]]: 1+1+4 = 6, not the trace 2 (a single probe has variance 2 Σ_{i≠j} H_ij²)
            ((lambda v: _H_COUPLED @ v, [torch.tensor([1.0, 1.0])]), 6.0),
        ),
        hint=(
            'a random ±1 vector v has E[v vᵀ] = I, so the expected value of vᵀHv is the trace; average it over the probes you are given.',
            'Tr(H) ≈ (1/m) Σ_k v_kᵀ (H v_k), with H v_k = hvp(v_k).',
            'return float(sum(float(v @ hvp(v)) for v in probes) / len(probes))',
        ),
    )
)

register(
    Exercise(
        name="05.best_bits",
        title="Exercise 5.2 (bits for four layers under a budget)",
        reference=best_bits,
        cases=(
            # options 2, 4, 8 bits cost 2, 4, 8 units; layer 0 is fragile at 2 bits, layer 2 at 2 bits too.
            # budget 16: 8 + 2 + 4 + 2 bits gives damage 0 + 1 + 0.5 + 0.5 = 2.0, better than uniform 4 bits (2.2)
            (([[2, 4, 8]] * 4, [[8, 1, 0], [1, 0.5, 0], [4, 0.5, 0], [0.5, 0.2, 0]], 16), [2, 0, 1, 0]),
            # budget 12: 4 + 2 + 4 + 2 bits, damage 1 + 1 + 0.5 + 0.5 = 3.0
            (([[2, 4, 8]] * 4, [[8, 1, 0], [1, 0.5, 0], [4, 0.5, 0], [0.5, 0.2, 0]], 12), [1, 0, 1, 0]),
            # budget 8: only 2 bits everywhere fits
            (([[2, 4, 8]] * 4, [[8, 1, 0], [1, 0.5, 0], [4, 0.5, 0], [0.5, 0.2, 0]], 8), [0, 0, 0, 0]),
        ),
        hint=(
            'with four layers and three options there are only 3⁴ = 81 plans; try them all and keep the least damaging one that fits.',
            'minimise Σ_i damages[i][j_i] subject to Σ_i costs[i][j_i] ≤ budget.',
            "best, best_damage = None, float('inf'); for choice in itertools.product(*[range(len(r)) for r in costs]): cost = sum(row[j] for row, j in zip(costs, choice)); damage = sum(row[j] for row, j in zip(damages, choice)); if cost <= budget and damage < best_damage: best, best_damage = list(choice), damage; finally return best",
        ),
    )
)

register(
    Exercise(
        name="05.soft_kl",
        title="Exercise 5.3 (the softened KL of distillation)",
        reference=soft_kl,
        cases=(
            ((torch.tensor([[1.0, -1.0]]), torch.tensor([[1.0, -1.0]]), 2.0), 0.0),
            # teacher softmax (3/4, 1/4), student (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812
            ((torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0986123, 0.0]]), 1.0), 0.1308120),
            # same distributions at T = 2 (teacher logits doubled), times T² = 4
            ((torch.tensor([[0.0, 0.0]]), torch.tensor([[2.1972246, 0.0]]), 2.0), 0.5232481),
        ),
        rel_tol=1e-4,
        hint=(
            "soften both logit vectors by dividing by T, turn them into probabilities, and measure how far the student's are from the teacher's; T² keeps the gradient on the scale of cross-entropy.",
            'T² · mean over rows of Σ_c p_c (log p_c − log q_c), p = softmax(z_t / T), q = softmax(z_s / T).',
            'p_log = F.log_softmax(teacher_logits / T, -1); q_log = F.log_softmax(student_logits / T, -1); return float(T**2 * (p_log.exp() * (p_log - q_log)).sum(-1).mean())',
        ),
    )
)

register(
    Quiz(
        name='05.kl_not_accuracy',
        question='The sensitivity scan ranks layers by the KL divergence of the logits, not by the accuracy drop. Why?',
        choices={
            'a': 'Accuracy needs labels, and the validation split has none, so only KL can be measured there',
            'b': 'One layer rarely flips a prediction, so accuracy ties; KL moves with every change',
            'c': 'KL is faster to compute than accuracy, because it skips the softmax',
            'd': 'KL is always larger than the accuracy drop, which makes the ranking safer against noise',
        },
        answer='b',
        explanations={
            'a': 'The validation split is labelled (the scan prints accuracies on it); labels are not the issue.',
            'b': "Right: the scan's accuracy column is mostly zeros and single sentences, ties everywhere. KL sees the logits move before any prediction flips, so it separates layers that accuracy cannot. In full: One quantized layer rarely flips a prediction: the drop is 0 or 1 sentence for most layers, so it cannot rank them, while KL moves continuously with every change of the outputs.",
            'c': 'KL needs the softmax of both models; both measures cost one forward pass per layer and setting.',
            'd': 'They are in different units (nats vs a fraction of sentences); comparing their sizes means nothing.',
        },
    )
)

register(
    Quiz(
        name='05.hutchinson_probe',
        question="Hutchinson's estimator averages vᵀHv over random vectors v with entries ±1. What makes the average the trace of H?",
        choices={
            'a': 'E[v vᵀ] = I for such vectors, so E[vᵀHv] = E[Tr(H v vᵀ)] = Tr(H E[v vᵀ]) = Tr(H)',
            'b': 'Every ±1 vector is an eigenvector of H, so vᵀHv sums the eigenvalues',
            'c': 'H is diagonal for a neural network, so vᵀHv = Σ H_ii for every probe',
            'd': 'The autograd engine builds H explicitly, and the probes only select entries of its diagonal',
        },
        answer='a',
        explanations={
            'a': 'Right: the entries are independent with mean 0 and variance 1, so off-diagonal terms H_ij v_i v_j average to zero and diagonal terms keep H_ii v_i² = H_ii. One probe is unbiased but noisy; more probes average the noise.',
            'b': 'Almost no ±1 vector is an eigenvector; the estimator needs no eigenvectors at all.',
            'c': "H is dense: weights of one layer interact. A single probe on a dense H is off (Exercise 5.1's third case).",
            'd': 'H is never formed: a Hessian-vector product H v costs two backward passes and n numbers, not n².',
        },
    )
)

register(
    Quiz(
        name='05.additive',
        question='The knapsack adds up per-layer damages measured one layer at a time. What does that assumption ignore?',
        choices={
            'a': 'The bytes of the scales, which the knapsack cannot count for mixed options',
            'b': 'The classifier head, which is never quantized',
            'c': 'That errors of several layers interact, compounding or cancelling',
            'd': 'Nothing: KL divergences of independently quantized layers add up exactly',
        },
        answer='c',
        explanations={
            'a': 'The costs are true stored bytes, codes and scales included (mixed.layer_bytes).',
            'b': 'The head is left in float on purpose; it is not what the sum ignores.',
            'c': 'Right: that is why every plan is built, saved and measured after the knapsack picks it, and why the error-propagation section looks at what quantizing every block does. In full: That errors of several quantized layers interact: they can compound through later blocks or partly cancel, so the real damage of a plan differs from the sum.',
            'd': 'KL divergences add for independent distributions, not for errors injected into one network in sequence.',
        },
    )
)

register(
    Quiz(
        name='05.smoothquant_alpha',
        question="What happens at SmoothQuant's α = 1?",
        choices={
            'a': 'Nothing changes: α = 1 is the identity migration',
            'b': 'The weights are divided by the activation ranges, so both the weights and the activations shrink',
            'c': 'The activations keep their outliers and the weights become uniform',
            'd': 'The activations become flat and their outliers move into the weight columns',
        },
        answer='d',
        explanations={
            'a': "No α gives the identity: the unsmoothed model (s = 1) is the baseline. α = 1 moves the activations' whole range; α = 0 does the opposite (s_j = 1 / max|W_:,j| flattens the weight columns).",
            'b': 'The product X Wᵀ is preserved: what the activations lose, the weight columns gain.',
            'c': "It is the other way round: the outlier channels' range moves into the weights.",
            'd': 'Right: s_j = max|X_j|, so X_j / s_j is at most 1 in every channel, and W_:,j · s_j carries the outliers. The weights start flat and have headroom to spare, so they can take some of the range; but an enlarged column raises the maximum of every row, so per-output-channel scales do not isolate it, and at low weight bit widths the migrated range costs accuracy: the sweep shows where α stops helping. In full: Every input channel is divided by its full range, so the activations become flat, and the weight columns are multiplied by those ranges, so the outliers now sit in the weights.',
        },
    )
)

register(
    Quiz(
        name='05.read_damage',
        question='What does this line compute?\n\n    0.5 * trace / w.numel() * (fake_quantize(w, spec) - w).pow(2).sum()',
        choices={
            'a': 'The exact change of the loss when w is replaced by its quantized copy',
            'b': 'A second-order estimate of the loss increase from quantizing w',
            'c': 'The SQNR of the quantized weight in dB',
            'd': 'The number of bytes the quantized weight needs, scales included',
        },
        answer='b',
        explanations={
            'a': 'It drops the gradient term (small at a trained minimum) and replaces ΔᵀHΔ by its average over directions.',
            'b': "Right: HAWQ-v2's Ω = ½ · Tr(H)/n · ||Q(W) - W||², the chapter's predicted sensitivity. In full: A second-order estimate of the loss increase from quantizing w: mean curvature per weight times the squared quantization error.",
            'c': 'SQNR would be 10·log10 of signal power over error power; there is no logarithm or signal term here.',
            'd': 'Bytes depend on bits and scales, not on the Hessian.',
        },
    )
)
