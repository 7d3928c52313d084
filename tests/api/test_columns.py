"""Metrics and rank snapshots in column form, for charts: the same rows as /metrics and /ranks, one list per
metric, and a snapshot x module matrix with the modules grouped by layer and type."""

from __future__ import annotations

from service.module_names import place
from service.tables import Metric, RankSnapshot

LAYER = "bert.encoder.layer.{}."
MODULES = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
           "attention.output.dense": "output", "intermediate.dense": "ffn_in", "output.dense": "ffn_out"}


def test_metric_columns_align_values_with_steps_and_null_the_gaps(client, alice, seed_job, sessions):
    job_id = seed_job(alice, "running")
    with sessions() as session:
        session.add_all([Metric(job_id=job_id, step=s,
                                values={"loss": 2.0 - s / 100, "lr": 0.001,
                                        **({"eval_accuracy": 0.5 + s / 100} if s % 20 == 0 else {})})
                         for s in range(5, 45, 5)])
        session.commit()
    url = f"/v1/jobs/{job_id}/metrics/columns"
    body = client.get(url, headers=alice).json()
    assert body["steps"] == [5, 10, 15, 20, 25, 30, 35, 40] and not body["has_more"]
    assert body["columns"]["loss"] == [2.0 - s / 100 for s in body["steps"]]
    assert body["columns"]["eval_accuracy"] == [None, None, None, 0.7, None, None, None, 0.9]
    page = client.get(url, params={"after_step": 10, "limit": 2}, headers=alice).json()
    assert page["steps"] == [15, 20] and page["has_more"] and set(page["columns"]) == {"loss", "lr", "eval_accuracy"}
    assert client.get(url, params={"after_step": -2}, headers=alice).status_code == 422  # -1: from step 0
    assert client.get(url, params={"limit": 0}, headers=alice).status_code == 422


def test_rank_columns_are_a_matrix_in_layer_and_type_order(client, alice, bob, seed_job, sessions):
    job_id = seed_job(alice, "succeeded")
    names = [LAYER.format(layer) + suffix for layer in (1, 0) for suffix in reversed(MODULES)]
    steps = [(0, {n: 4 for n in names}, False), (6, {n: 3 if "query" in n else 2 for n in names}, False),
             (12, {n: 1 if "key" in n else 2 for n in names}, True)]
    with sessions() as session:
        session.add_all([RankSnapshot(job_id=job_id, step=step, budget=float(sum(r.values())), ranks=r, final=final,
                                      adapter_params=sum(r.values()) * 65) for step, r, final in steps])
        session.commit()
    url = f"/v1/jobs/{job_id}/ranks/columns"
    body = client.get(url, headers=alice).json()
    modules = body["modules"]
    assert [(m["layer"], m["type"]) for m in modules] == [
        (layer, kind) for layer in (0, 1) for kind in MODULES.values()]
    assert {m["kind"] for m in modules[:4]} == {"attention"} and {m["kind"] for m in modules[4:6]} == {"ffn"}
    assert body["steps"] == [0, 6, 12] and body["final"] == [False, False, True]
    assert body["budgets"] == [48.0, 26.0, 22.0] and body["adapter_params"] == [48 * 65, 26 * 65, 22 * 65]
    for row, (_, ranks, _) in zip(body["ranks"], steps):
        assert row == [ranks[m["name"]] for m in modules]
    assert body["ranks"][1][0] == 3 and body["ranks"][2][1] == 1  # layer 0 query at step 6, layer 0 key at 12
    assert body["final_rank_pattern"] == steps[2][1]

    tail = client.get(url, params={"after_step": 6}, headers=alice).json()
    assert tail["steps"] == [12] and tail["modules"] == modules
    empty = client.get(url, params={"after_step": 12}, headers=alice).json()
    assert empty["steps"] == [] and empty["ranks"] == [] and empty["modules"] == modules
    assert client.get(url, headers=bob).status_code == 404


def test_module_places_of_other_families():
    assert (place("transformer.h.3.attn.c_proj").type,
            place("transformer.h.3.mlp.c_proj").type) == ("output", "ffn_out")
    assert place("model.layers.7.mlp.gate_proj").kind == "ffn" and place("model.layers.7.mlp.gate_proj").layer == 7
    t5 = place("decoder.block.2.layer.1.EncDecAttention.q")
    assert (t5.stack, t5.layer, t5.type) == ("decoder", 2, "query")
    assert place("classifier").type == "other" and place("classifier").layer is None
