# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The causal graph of weakly-supervised segmentation
#
# **What you will learn**
#
# - why image-level labels let *context* leak into a classifier (a horse on grass, ridden by a
#   person), and why its class activation maps (CAMs) then bleed onto that context;
# - the structural causal model (SCM) of CONTA: context prior $C$, image $X$, image-specific
#   context $M$, labels $Y$;
# - the backdoor path $X \leftarrow C \rightarrow M \rightarrow Y$, d-separation, and why $\{C\}$
#   is the adjustment set while the mediator $M$ is not (by hand and with DoWhy);
# - the do-operator as graph surgery, and the backdoor formula
#   $P(Y \mid do(X)) = \sum_c P(Y \mid X, c)\,P(c)$;
# - on a discrete simulator whose answer is known exactly: the naive estimate, the backdoor sum,
#   DoWhy's estimate and a refuter, side by side with the truth;
# - how CONTA approximates the sum over a context it cannot observe: a confounder dictionary and
#   the NWGM.
#
# **Before this:** nothing in the course; conditional probability and Bayes' rule are enough.
#
# **Run time and hardware:** seconds on 2 CPU cores (the README's course table; under 10 s in smoke mode). No GPU and
# no data set needed: everything here is simulated.

# %% tags=["parameters"]
import os
import tempfile

SMOKE = os.environ.get("CAUSAL_WSSS_SMOKE", "0") == "1"  # tests: small sizes, figures to a temp dir
# No DATA root: this notebook simulates its data (notebook 02 reads CAUSAL_WSSS_DATA).
SEED = 0
N_SAMPLES = 2_000 if SMOKE else 50_000  # units drawn from the simulator
REFUTER_SIMULATIONS = 3 if SMOKE else 20  # placebo refutations DoWhy runs
FIGURES_DIR = tempfile.mkdtemp(prefix="causal_wsss_01_") if SMOKE else "../figures"

# %%
import warnings

import matplotlib.pyplot as plt
import networkx as nx
import pandas as pd
import torch
from dowhy import CausalModel

from causal_wsss import scm
from causal_wsss.backdoor import compare_estimates, expected_sigmoid, nwgm_error_bound, nwgm_sigmoid
from causal_wsss.simulate import default_scm
from causal_wsss.viz import plot_bars, plot_graph, save_figure
from causal_wsss.widgets import confounding_figure, confounding_widget

pd.set_option("display.max_colwidth", None)  # show the node descriptions in full

# %% [markdown]
# ## 1. Why context confounds image-level classification
#
# In weakly-supervised semantic segmentation (WSSS) the only training signal is an image-level
# label: "this picture contains a horse and a person". We train a multi-label classifier on
# those labels, read its class activation map (CAM) to find *where* it saw each class, turn the
# CAMs into pseudo-masks, and train a segmentation network on them.
#
# The weak point is the classifier. In PASCAL VOC, horses stand on grass and often carry a
# rider. A classifier rewarded only for saying "horse" can succeed by looking at grass and
# riders as much as at the horse, and nothing in the labels tells it otherwise: horse pixels
# and context pixels both predict the label. Its CAM then spreads onto the rider and the meadow
# (*object ambiguity*, *incomplete background*) or covers only the most telling part of the
# horse (*incomplete foreground*). The context is a **confounder**: a common cause of what the
# image shows and of the label. CONTA (Zhang, Zhang, Tang, Hua and Sun, "Causal Intervention
# for Weakly-Supervised Semantic Segmentation", NeurIPS 2020,
# [arXiv:2009.12547](https://arxiv.org/abs/2009.12547)) removes it with a causal intervention;
# this notebook builds the reasoning behind that. The project's own description of the method,
# with every source and every choice it makes where the paper is silent, is
# [docs/method.md](../docs/method.md); the graph below is its
# [§1](../docs/method.md#1-structural-causal-model-scm-and-the-adjustment-formula).
#
# ## 2. The structural causal model
#
# Four variables, with the meanings the package gives them:

# %%
graph = scm.conta_graph()
pd.DataFrame({"meaning": nx.get_node_attributes(graph, "description")})

# %% [markdown]
# and five arrows (paper Fig. 3(a)):
#
# - $C \rightarrow X$: the context prior shapes how an image is composed (horses are
#   photographed on grass, with riders);
# - $C \rightarrow M \leftarrow X$: $M$ is the image read through the context templates of $C$;
# - $X \rightarrow Y$: the effect we want: the object's pixels cause the label;
# - $M \rightarrow Y$: context drives the label too, which is how a classifier can say "horse"
#   from a rider alone.
#
# The red edges below form the one **backdoor path**, a path from $X$ to $Y$ that starts with
# an arrow *into* $X$. Association flows along it without $X$ causing anything.

# %%
drawn = graph.copy()  # short captions under the nodes
nx.set_node_attributes(drawn, {"C": "context prior", "X": "image", "M": "image-specific context",
                               "Y": "labels"}, "description")
path = scm.backdoor_paths(graph, "X", "Y")[0]
path_edges = [(u, v) if graph.has_edge(u, v) else (v, u) for u, v in zip(path, path[1:])]
fig = plot_graph(drawn, scm.conta_layout(), highlight=path_edges,
                 title="the CONTA SCM; backdoor path in red")
save_figure(fig, f"{FIGURES_DIR}/01_causal_graph_scm.png")
plt.show()
print("backdoor paths from X to Y:", scm.backdoor_paths(graph, "X", "Y"))

# %% [markdown]
# ## 3. d-separation: which sets close the backdoor path?
#
# A set $Z$ **blocks** a path if the path has a non-collider in $Z$, or a collider
# ($\rightarrow v \leftarrow$) such that neither $v$ nor any descendant of $v$ is in $Z$. $X$ and
# $Y$ are **d-separated** by $Z$ when $Z$ blocks every path between them; then
# $X \perp Y \mid Z$ in every distribution the graph allows. To look at the backdoor paths only,
# we delete the arrows *out of* $X$ (the graph $G_{\underline{X}}$) and ask whether $Z$
# separates $X$ from $Y$ there.

# %%
no_out = graph.copy()
no_out.remove_edges_from(list(graph.out_edges("X")))  # only backdoor paths remain
cut = "G without X's out-edges"
after_do = scm.intervene(graph, "X")  # do(X): the arrow C -> X removed
queries = [(graph, "G", "X", "Y", ()), (no_out, cut, "X", "Y", ()),
           (no_out, cut, "X", "Y", ("C",)), (no_out, cut, "X", "Y", ("M",)),
           (graph, "G", "C", "Y", ("X", "M")),
           (after_do, "G after do(X)", "X", "C", ()), (after_do, "G after do(X)", "X", "C", ("M",))]
pd.DataFrame([{"graph": name, "query": f"{a} ⫫ {b} | {{{', '.join(z)}}}",
               "d-separated": scm.is_d_separated(g, a, b, z)}
              for g, name, a, b, z in queries])

# %% [markdown]
# Rows 3 and 4: in $G_{\underline{X}}$ both $\{C\}$ and $\{M\}$ block the backdoor path. But
# $M$ is a **descendant** of $X$ ($X \rightarrow M$, a mediator). Adjusting for it would cut the
# part of $X$'s effect that flows through $M$, and it would open the collider
# $X \rightarrow M \leftarrow C$.
#
# The last two rows show that collider on its own. In $G$ itself, $X$ and $C$ can never be
# separated: the arrow $C \rightarrow X$ joins them directly, whatever we condition on. So we
# look at the graph after $do(X)$ (section 4), where that arrow is gone and the only path
# between $X$ and $C$ is $X \rightarrow M \leftarrow C$. Given nothing, that path is blocked at
# the collider $M$: $X \perp C$ (True). Given $\{M\}$, it opens: $X$ and $C$ become dependent
# (False). Conditioning on a common *effect* creates association between its causes; adjusting
# for $M$ would do exactly that. Pearl's **backdoor criterion** therefore asks two things of
# $Z$: no node of $Z$ descends from $X$, and $Z$ blocks every backdoor path.

# %%
candidates = [(), ("C",), ("M",), ("C", "M")]
pd.DataFrame([{"Z": "{" + ", ".join(z) + "}",
               "blocks the backdoor path": scm.is_d_separated(no_out, "X", "Y", z),
               "holds a descendant of X": bool(set(z) & scm.descendants(graph, "X")),
               "backdoor criterion": scm.satisfies_backdoor(graph, "X", "Y", z)}
              for z in candidates])

# %% [markdown]
# ### Identification with DoWhy
#
# DoWhy finds the same adjustment set from the graph alone. `scm.minimal_backdoor_sets` is the
# package's exhaustive search; `scm.dowhy_backdoor_set` asks DoWhy's identifier.

# %%
print("minimal backdoor sets (package):", scm.minimal_backdoor_sets(graph, "X", "Y"))
print("backdoor set (DoWhy):          ", scm.dowhy_backdoor_set(graph))

# %% [markdown]
# The estimand DoWhy prints is $\frac{d}{dX} E[Y \mid C]$ averaged over $C$: the backdoor
# adjustment. It needs $C$ as a data column, so we give it a sample of the simulator of
# section 5, where $C$ is observed.

# %%
sim = default_scm(1.0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # DoWhy's deprecation and "unobserved variable" notices
    model = CausalModel(data=sim.sample(N_SAMPLES, SEED).to_frame(), treatment="X",
                        outcome="Y", graph=nx.DiGraph(graph.edges))
    estimand = model.identify_effect(proceed_when_unidentifiable=True)
print(estimand)

# %% [markdown]
# ## 4. The do-operator is graph surgery
#
# $do(X = x)$ means *setting* $X$ by hand, whatever the context: pasting the horse into any
# scene. In the graph this removes every arrow into $X$. With $C \rightarrow X$ gone, no
# backdoor path is left, and summing over $C$ and $M$ in the cut graph gives the **backdoor
# adjustment** (paper Eq. 1):
#
# $$P(Y \mid do(X = x)) = \sum_c P(c) \sum_m P(m \mid x, c)\, P(Y \mid x, m)
#   = \sum_c P(Y \mid x, c)\, P(c),$$
#
# while the observational quantity a plain classifier learns is
#
# $$P(Y \mid X = x) = \sum_c P(Y \mid x, c)\, P(c \mid x).$$
#
# The only difference is the weight of each context: $P(c \mid x)$, how often the context goes
# with the object, against the prior $P(c)$. The intervention judges the object in every
# context, each at its own frequency.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
plot_graph(drawn, scm.conta_layout(), highlight=path_edges, title="observed: P(Y | X)",
           ax=axes[0])
plot_graph(scm.intervene(drawn, "X"), scm.conta_layout(), title="after do(X): C → X cut",
           ax=axes[1])
save_figure(fig, f"{FIGURES_DIR}/01_causal_graph_do.png")
plt.show()
print("backdoor paths after do(X):", scm.backdoor_paths(scm.intervene(graph, "X"), "X", "Y"))

# %% [markdown]
# ## 5. A simulator whose answer is known
#
# `simulate.default_scm` is a discrete version of the graph: three contexts, a binary object
# indicator $X$, three context readings $M$ and a binary label $Y$. Context 0 (half of the
# images) nearly always shows the object but gives a low-$Y$ reading; contexts 1 and 2 mostly
# lack it and give high-$Y$ readings. Inside every context, the object *raises* $P(Y = 1)$:

# %%
pd.DataFrame({"P(c)": sim.p_c, "P(X=1 | c)": sim.p_x_given_c[:, 1],
              "P(c | X=1)": sim.p_c_given_x()[1], "P(c | X=0)": sim.p_c_given_x()[0],
              "P(Y=1 | X=0, c)": sim.p_y_given_x_c()[0],
              "P(Y=1 | X=1, c)": sim.p_y_given_x_c()[1]}).rename_axis("context c").round(3)

# %% [markdown]
# Pooled over contexts, though, images with the object have $Y = 1$ *less* often, because they
# mostly come from context 0 (Simpson's reversal). `backdoor.compare_estimates` draws
# `N_SAMPLES` units and computes every estimate of the effect
# $P(Y{=}1 \mid do(X{=}1)) - P(Y{=}1 \mid do(X{=}0))$: the naive contrast (from the sample and
# exactly), the backdoor sum on the exact tables, the stratified backdoor estimate from the
# sample, and DoWhy's `backdoor.linear_regression` (with treatment × context interactions).
# `error` is the distance to the truth.

# %%
table = compare_estimates(sim, N_SAMPLES, SEED, refuter_simulations=REFUTER_SIMULATIONS)
table.to_frame().round(4)

# %% [markdown]
# A **refuter** checks an estimate against a case whose answer is known. DoWhy's placebo refuter
# permutes $X$ across units, which destroys any effect, and re-estimates: the new effect should
# be near 0 and its p-value not small.

# %%
print(f"placebo refuter: effect of a permuted X = {table.placebo_effect:+.4f} "
      f"(p-value {table.placebo_p_value:.2f})")
print(f"backdoor estimate from the sample: {table.backdoor_empirical:+.4f} "
      f"± {table.backdoor_empirical_se:.4f} (truth {table.truth:+.4f})")
frame = table.to_frame().set_index("estimate")
names = ["naive", "backdoor_empirical", "dowhy"]
fig = plot_bars(names, {f"n = {N_SAMPLES}": frame.loc[names, "value"].tolist()},
                reference=table.truth, reference_label="truth: P(Y | do(X)) contrast",
                ylabel="effect of X on Y", title="estimates on one simulated sample")
save_figure(fig, f"{FIGURES_DIR}/01_causal_graph_estimates.png")
plt.show()

# %% [markdown]
# ## 6. How strong must the confounding be?
#
# `default_scm(strength)` scales both arms of the backdoor path; at strength 0, $C$ is
# disconnected and the naive contrast *is* the causal effect. The left panel follows the three
# exact quantities over the strength; the right one compares $P(Y{=}1 \mid X{=}x)$ with
# $P(Y{=}1 \mid do(X{=}x))$ at the marked strength. The backdoor sum sits on the truth at every
# strength: when $C$ is observed, adjustment is exact.

# %%
fig, line = confounding_figure(1.0)
save_figure(fig, f"{FIGURES_DIR}/01_causal_graph_strength.png")
print(line)
plt.show()

# %% [markdown]
# Why does the truth (dashed) itself fall, from about 0.26 at strength 0 to 0.20 at strength
# 1? `strength` does more than confound: it also scales the mechanism $C \rightarrow M$. $X$
# acts on $Y$ in two ways, directly ($X \rightarrow Y$, one logit) and by pushing the reading $M$
# towards its high-$Y$ value ($X \rightarrow M \rightarrow Y$). The stronger $C$ pins $M$ to
# its own value, the less room $X$ has to move $M$, so the mediated part of the effect shrinks.
# And the direct part is added on the logit scale: in contexts that already push $P(Y = 1)$
# towards 0.2 or 0.8, one logit changes the probability less than around 0.5. The
# interventional effect is a property of the whole mechanism, so it moves when the mechanism
# does; the *bias* of the naive contrast (the gap between the solid and dashed curves) is what
# the confounding adds.
#
# Move the slider: every quantity is computed exactly from the tables, so the figure follows at
# once. Where does the naive contrast change sign?

# %%
confounding_widget(value=1.0)

# %% [markdown]
# ## 7. CONTA cannot observe C: dictionary and NWGM
#
# In images, $C$ is not a column. CONTA approximates it by a **confounder dictionary**
# $\{c_1, \dots, c_n\}$: $c_i$ is the average segmentation mask of class $i$ over the training
# set (where class $i$ tends to sit, and its rough shape), with a prior $P(c_i)$. Eq. 1 becomes
#
# $$P(Y \mid do(X)) = \sum_{i=1}^{n} P\big(Y \mid X, M = f(X, c_i)\big)\, P(c_i),$$
#
# one forward pass of the classifier per stratum. For a sigmoid classifier with logits
# $s(x, c)$ the sum is $E_c[\sigma(s(x, c))]$, and CONTA replaces it by the **normalised
# weighted geometric mean** (NWGM), which moves the expectation inside the sigmoid:
#
# $$E_c[\sigma(s(x, c))] \approx \sigma\big(E_c[s(x, c)]\big)
#   = \sigma\Big(\sum_c P(c)\, s(x, c)\Big).$$
#
# Why that identity? The NWGM of the sigmoid outputs weights each stratum geometrically and
# renormalises over the two outcomes:
#
# $$\mathrm{NWGM} = \frac{\prod_c \sigma(s_c)^{P(c)}}{\prod_c \sigma(s_c)^{P(c)}
#   + \prod_c \big(1 - \sigma(s_c)\big)^{P(c)}}
#   = \frac{1}{1 + \prod_c \big(\tfrac{1 - \sigma(s_c)}{\sigma(s_c)}\big)^{P(c)}}
#   = \frac{1}{1 + \prod_c e^{-P(c)\, s_c}} = \sigma\Big(\sum_c P(c)\, s_c\Big),$$
#
# because $(1 - \sigma(s))/\sigma(s) = e^{-s}$. So the NWGM of the sigmoids *is* the sigmoid of
# the mean logit, exactly; the approximation is only the step $E_c[\sigma(s_c)] \approx
# \mathrm{NWGM}$ (Baldi and Sadowski's result for dropout, which CONTA borrows). The cell below
# checks the identity on random logits.
#
# If $s$ is linear in the context, $E_c[s(x, c)] = s(x, E_c[c])$: a *single* forward pass with
# the expected context, which CONTA computes by attention over the dictionary (paper Eq. 3):
# $M = \sum_i \alpha_i\, P(c_i)\, c_i$. The approximation error is at most
# $\mathrm{Var}_c[s] / (12\sqrt{3})$, so it is small when the logits change little across
# contexts:

# %%
gen = torch.Generator().manual_seed(SEED)
prior = torch.tensor(sim.p_c)
s_c = torch.randn(sim.n_c, generator=gen, dtype=torch.float64)  # one logit per context
geometric = (torch.sigmoid(s_c) ** prior).prod()
nwgm_by_hand = geometric / (geometric + ((1 - torch.sigmoid(s_c)) ** prior).prod())
print(f"NWGM by the product formula {nwgm_by_hand:.6f} = sigma(sum_c P(c) s_c) "
      f"{torch.sigmoid((prior * s_c).sum()):.6f} = nwgm_sigmoid "
      f"{nwgm_sigmoid(s_c[None, :, None], prior).item():.6f}")
assert torch.isclose(nwgm_by_hand, torch.sigmoid((prior * s_c).sum()))
rows = []
for spread in (0.25, 1.0, 3.0):
    logits = spread * torch.randn(1, sim.n_c, 1, generator=gen, dtype=torch.float64)  # (1, n_c, 1)
    exact, nwgm = expected_sigmoid(logits, prior).item(), nwgm_sigmoid(logits, prior).item()
    rows.append({"logit spread": spread, "E_c[σ(s)]": exact, "σ(E_c[s]) (NWGM)": nwgm,
                 "|gap|": abs(exact - nwgm), "bound": nwgm_error_bound(logits, prior).item()})
pd.DataFrame(rows).round(4)

# %% [markdown]
# Notebook 06 builds the dictionary from segmentation masks and trains the context adjustment
# of Eq. 3: [06 · The confounder dictionary](06_confounder_dictionary.ipynb).
#
# ## Exercises
#
# **Exercise 1.** Compute the backdoor sum by hand from the table of section 5: the effect
# $\sum_c P(c)\,[P(Y{=}1 \mid X{=}1, c) - P(Y{=}1 \mid X{=}0, c)]$ with the columns `P(c)`,
# `P(Y=1 | X=1, c)` and `P(Y=1 | X=0, c)`, and the naive contrast with `P(c | X=1)` and
# `P(c | X=0)` instead of `P(c)`. Compare both with `table.truth` and `table.naive_exact`.
#
# **Exercise 2.** At which confounding strength does the naive contrast change sign? Use
# `causal_wsss.widgets.effect_summary(strength)` on a fine grid.
#
# The solutions are in the folded cells below (click to unfold); try first.

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 1: the backdoor sum weights each context by P(c), the naive contrast by P(c | x).
p_c, p_y_xc, p_c_x = sim.p_c, sim.p_y_given_x_c(), sim.p_c_given_x()  # (3,), (2, 3), (2, 3)
backdoor_by_hand = float((p_c * (p_y_xc[1] - p_y_xc[0])).sum())
naive_by_hand = float((p_c_x[1] * p_y_xc[1]).sum() - (p_c_x[0] * p_y_xc[0]).sum())
print(f"backdoor sum by hand {backdoor_by_hand:+.4f} (truth {table.truth:+.4f}); "
      f"naive by hand {naive_by_hand:+.4f} (exact naive {table.naive_exact:+.4f})")
assert abs(backdoor_by_hand - table.truth) < 1e-9 and abs(naive_by_hand - table.naive_exact) < 1e-9

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution 2: scan the strength; the naive contrast falls from the truth (strength 0) to about
# -0.12 (strength 1) and crosses zero in between, while the true effect stays positive.
import numpy as np

from causal_wsss.widgets import effect_summary

grid = np.linspace(0.0, 1.0, 1001)
naive = np.array([effect_summary(s).naive for s in grid])
crossing = grid[np.flatnonzero(np.diff(np.sign(naive)))[0] + 1]
print(f"the naive contrast changes sign near strength {crossing:.3f}; the truth there is "
      f"{effect_summary(crossing).truth:+.3f}")
assert 0.0 < crossing < 1.0

# %% [markdown]
# ## What we saw
#
# - Image-level labels make context a confounder: $C$ causes both the image $X$ and, through
#   $M$, the label $Y$, along the backdoor path $X \leftarrow C \rightarrow M \rightarrow Y$.
# - $\{C\}$ satisfies the backdoor criterion; $M$ blocks the path too but is a mediator (a
#   descendant of $X$) and a collider between $X$ and $C$, so adjusting for it is wrong. DoWhy
#   identifies the same set.
# - $do(X)$ cuts $C \rightarrow X$; $P(Y \mid do(X))$ weights contexts by $P(c)$ instead of
#   $P(c \mid x)$. On the simulator the naive contrast even had the wrong sign, while the
#   backdoor sum, its sample estimate and DoWhy recovered the truth, and the placebo refuter
#   found no effect of a permuted $X$.
# - CONTA replaces the unobservable $C$ by a dictionary of class-average masks and the sum by
#   one NWGM forward pass; the NWGM of sigmoids is exactly the sigmoid of the mean logit.
#
# **Next:** how strong is this confounding in real and synthetic data?
# [02 · Confounding in the data](02_confounding_in_data.ipynb).
