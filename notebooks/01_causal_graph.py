# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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
# **Run time and hardware:** about 20 s on a laptop CPU (under 10 s in smoke mode). No GPU and
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
# image shows and of the label. CONTA (Zhang et al., NeurIPS 2020) removes it with a causal
# intervention; this notebook builds the reasoning behind that.
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
queries = [(graph, "G", "X", "Y", ()), (no_out, cut, "X", "Y", ()),
           (no_out, cut, "X", "Y", ("C",)), (no_out, cut, "X", "Y", ("M",)),
           (graph, "G", "C", "Y", ("X", "M")), (graph, "G", "X", "C", ("M",))]
pd.DataFrame([{"graph": name, "query": f"{a} ⫫ {b} | {{{', '.join(z)}}}",
               "d-separated": scm.is_d_separated(g, a, b, z)}
              for g, name, a, b, z in queries])

# %% [markdown]
# Rows 3 and 4: in $G_{\underline{X}}$ both $\{C\}$ and $\{M\}$ block the backdoor path. But
# $M$ is a **descendant** of $X$ ($X \rightarrow M$, a mediator). Adjusting for it would cut the
# part of $X$'s effect that flows through $M$, and it would open the collider
# $X \rightarrow M \leftarrow C$ (last row: given $M$, $X$ and $C$ become dependent). Pearl's
# **backdoor criterion** therefore asks two things of $Z$: no node of $Z$ descends from $X$, and
# $Z$ blocks every backdoor path.

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
# If $s$ is linear in the context, $E_c[s(x, c)] = s(x, E_c[c])$: a *single* forward pass with
# the expected context, which CONTA computes by attention over the dictionary (paper Eq. 3):
# $M = \sum_i \alpha_i\, P(c_i)\, c_i$. The approximation error is at most
# $\mathrm{Var}_c[s] / (12\sqrt{3})$, so it is small when the logits change little across
# contexts:

# %%
gen = torch.Generator().manual_seed(SEED)
prior = torch.tensor(sim.p_c)
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
# ## What we saw
#
# - Image-level labels make context a confounder: $C$ causes both the image $X$ and, through
#   $M$, the label $Y$, along the backdoor path $X \leftarrow C \rightarrow M \rightarrow Y$.
# - $\{C\}$ satisfies the backdoor criterion; $M$ blocks the path too but is a mediator (a
#   descendant of $X$), so adjusting for it is wrong. DoWhy identifies the same set.
# - $do(X)$ cuts $C \rightarrow X$; $P(Y \mid do(X))$ weights contexts by $P(c)$ instead of
#   $P(c \mid x)$. On the simulator the naive contrast even had the wrong sign, while the
#   backdoor sum, its sample estimate and DoWhy recovered the truth, and the placebo refuter
#   found no effect of a permuted $X$.
# - CONTA replaces the unobservable $C$ by a dictionary of class-average masks and the sum by
#   one NWGM forward pass.
#
# **Next:** how strong is this confounding in real and synthetic data?
# [02 · Confounding in the data](02_confounding_in_data.ipynb).
