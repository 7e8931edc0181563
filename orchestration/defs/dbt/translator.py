"""How dbt nodes become Dagster assets: keys are the warehouse tables, groups are the layers.

* Asset key = ``<schema>/<table>`` of the relation in DuckDB: ``staging/stg_shop__orders``,
  ``marts/customer_tiers``, ``seeds/membership_levels``, ``marts/customer_tier_history``.
  A dbt source gets the key of the table it reads, ``raw/orders`` for ``source('shop',
  'orders')``, which is the key of the Python asset that writes it: the graph is connected from
  the raw files to the marts without a hand-kept mapping. The Python assets follow the same
  rule (``marts/loyalty_balances``), so a key always tells where to look in the warehouse.
* Group = the layer: the model's folder under ``models/`` (``staging``, ``intermediate``,
  ``marts``), ``seeds`` (and ``snapshots`` for a dbt snapshot; the project has none).
* A ``meta: {dagster: {asset_key: [...], group: ...}}`` in a yml still wins (dagster-dbt's
  documented override), for the rare node that must differ.
* dbt tests become asset checks (dagster-dbt's default); ERROR-severity tests are blocking, so a
  failure stops everything downstream, Python assets included.
* A history table (``meta: {history_table: true}``, the tier history) also depends on every raw
  table its dbt ancestors read: a backfill of its partitions rebuilds them from the raw tables
  (customer_warehouse/tier_history.py), so in a run that loads the raw files it comes after.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

LAYER_GROUPS = {"seed": "seeds", "snapshot": "snapshots", "source": "raw"}


def _dagster_meta(props: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = (props.get("config") or {}).get("meta") or props.get("meta") or {}
    return meta.get("dagster") or {}


class WarehouseTranslator(DagsterDbtTranslator):
    """Keys by warehouse table, groups by layer (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(DagsterDbtTranslatorSettings(enable_asset_checks=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if _dagster_meta(dbt_resource_props).get("asset_key"):
            return super().get_asset_key(dbt_resource_props)
        props = dbt_resource_props
        if props["resource_type"] == "source":
            table = props.get("identifier") or props["name"]
        else:
            table = props.get("alias") or props["name"]
        return dg.AssetKey([props["schema"], table])

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        meta = (props.get("config") or {}).get("meta") or props.get("meta") or {}
        if not meta.get("history_table"):
            return spec
        sources = sorted(_ancestor_sources(manifest, unique_id))
        keys = [self.get_asset_key(self.get_resource_props(manifest, uid)) for uid in sources]
        return spec.merge_attributes(deps=keys)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        configured = _dagster_meta(dbt_resource_props).get("group")
        if configured:
            return configured
        resource_type = dbt_resource_props["resource_type"]
        if resource_type in LAYER_GROUPS:
            return LAYER_GROUPS[resource_type]
        # fqn = [project, folder, ..., name]; a model at the root of models/ has no layer.
        fqn = dbt_resource_props.get("fqn") or []
        return fqn[1] if len(fqn) > 2 else "dbt"


def _ancestor_sources(manifest: Mapping[str, Any], unique_id: str) -> set[str]:
    """The dbt sources among the ancestors of a node (via the manifest's parent map)."""
    parents = manifest.get("parent_map") or {}
    seen: set[str] = set()
    stack = [unique_id]
    while stack:
        for parent in parents.get(stack.pop(), []):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return {node for node in seen if node.startswith("source.")}
