"""Ring-A-Bell (Tsai et al., ICLR 2024, "Ring-A-Bell! How Reliable are Concept Removal Methods for
Diffusion Models?"), reconstructed from the paper and the authors' notebooks
(github.com/chiayi-hsu/Ring-A-Bell); see docs/attacks.md.

Concept vector, in the attacked model's own text encoder E (token-level hidden states)::

    c = mean_i [ E(p_i with the concept) - E(p_i without it) ]

Target: ``E(prompt) + eta * c``. A genetic algorithm then searches K discrete tokens x minimising
``|| E(x) - target ||^2`` (summed over positions and features): keep the better half, each parent
crosses over (one cut point) with a random parent with probability ``crossover_rate`` (two
children), each individual has one random position re-drawn with probability ``mutation_rate``.
Black-box with respect to the UNet: only the text encoder is queried.
"""

from __future__ import annotations

import torch

from scdpo.attack.base import AttackContext, AttackResult, Target, register
from scdpo.attack.targets import concept_pairs
from scdpo.models.token_ids import check_shared_vocab, encode_ids, encode_texts, layout_slots, room, with_tokens
from scdpo.models.tokens import allowed_tokens, decode

DEFAULT_GENERATIONS = 3000
DEFAULT_TOKENS = 16


def concept_vector(model, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Mean difference of the (T, D) text states with and without the concept."""
    with_c = encode_texts(model, [a for a, _ in pairs]).context.float()
    without = encode_texts(model, [b for _, b in pairs]).context.float()
    return (with_c - without).mean(0)


def _fitness(model, lay, population: torch.Tensor, vocab: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # the token ids are encoded directly, as the authors do: no tokenizer in the loop; the whole
    # population is set into one id layout at once (a per-individual loop through the tokenizer's
    # special tokens cost 26 ms a generation on the CPU, where a whole generation took 50-59 ms in
    # an H200 shard; BENCHMARKS.md, "Twelfth round")
    ids = with_tokens(lay, vocab[population])
    with torch.no_grad():
        states = encode_ids(model, ids).context.float()
    return ((states - target) ** 2).sum((1, 2)).cpu()


def search(model, target_states: torch.Tensor, k: int, vocab: torch.Tensor, g: torch.Generator, budget,
           population: int, mutation_rate: float, crossover_rate: float):
    """The genetic search of ``k`` tokens (indices into ``vocab``) whose encoding matches
    ``target_states``. Returns (best text, best token ids, best loss, generations run).

    Only the individuals a generation changed are encoded: a kept parent that no mutation touched
    (and a crossover child that copies a parent: cut at 0, or a parent crossed with itself) carries
    its loss over, which skipped 39% of the encoder's rows (BENCHMARKS.md). Where a sequence's loss
    does not depend on its batch (the CPU; tests/test_attack.py) this is the search that encodes
    everyone, as the authors' code does."""
    check_shared_vocab(model)
    lay = layout_slots(model, [None] * k)
    pop = torch.randint(len(vocab), (population, k), generator=g)
    known = torch.full((population,), float("nan"))  # each individual's loss, NaN until encoded
    best = (float("inf"), None, None)
    gen = 0
    while gen == 0 or not budget.over(gen):  # at least one generation
        todo = known.isnan()
        loss = known.clone()
        if todo.any():  # a generation that changed nobody (small populations, K = 1) encodes nothing
            loss[todo] = _fitness(model, lay, pop[todo], vocab, target_states)
        order = torch.argsort(loss, stable=True)
        if loss[order[0]] < best[0]:
            ids = vocab[pop[order[0]]]
            best = (float(loss[order[0]]), decode(model.tokenizers[0], ids), ids.tolist())
        keep = order[:max(population // 2, 1)]
        parents, parent_loss = pop[keep], loss[keep]
        gen += 1
        children, child_loss = [], []
        for i in range(len(parents)):
            children.append(parents[i].clone())
            child_loss.append(parent_loss[i])
            if torch.rand((), generator=g) < crossover_rate:
                j = int(torch.randint(len(parents), (), generator=g))
                cut = int(torch.randint(k, (), generator=g))
                children.append(torch.cat([parents[i][:cut], parents[j][cut:]]))
                children.append(torch.cat([parents[j][:cut], parents[i][cut:]]))
                # cut 0 swaps whole parents, and a parent crossed with itself gives itself twice: copies
                child_loss += [parent_loss[j], parent_loss[i]] if cut == 0 or j == i else [torch.tensor(float("nan"))] * 2
        pop, known = torch.stack(children), torch.stack(child_loss)
        mutate = torch.rand(len(pop), generator=g) < mutation_rate
        where = torch.randint(k, (len(pop),), generator=g)
        values = torch.randint(len(vocab), (len(pop),), generator=g)
        pop[mutate, where[mutate]] = values[mutate]
        known[mutate] = float("nan")
    return best[1], best[2], best[0], gen


@register("ring-a-bell")
def ring_a_bell(ctx: AttackContext, target: Target, g: torch.Generator) -> AttackResult:
    cfg, model = ctx.cfg, ctx.victim
    k = min(cfg.tokens or DEFAULT_TOKENS, room(model.tokenizers[0]))
    c = concept_vector(model, concept_pairs(target, cfg.concept_pairs, cfg.pairs))
    goal = encode_texts(model, [target.prompt]).context.float()[0] + cfg.eta * c
    vocab = allowed_tokens(model.tokenizers[0], cfg.token_pool)
    text, ids, loss, gens = search(model, goal, k, vocab, g, ctx.budget, cfg.population, cfg.mutation_rate,
                                   cfg.crossover_rate)
    return AttackResult(text, ids, loss, gens)
