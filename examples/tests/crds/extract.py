#!/usr/bin/env python3
"""Writes the vendored CRD schemas of README.md: for each (file, CRD name, version) below,
the `openAPIV3Schema` of that version, unchanged, as JSON (sorted keys, two-space indent).

    python3 extract.py ISTIO_CRD_ALL_GEN_YAML ENVOY_GATEWAY_EEP_CRD_YAML

needs PyYAML (Debian's python3-yaml). Run from this directory; see README.md for the
exact source files and commits.
"""
import json
import sys

import yaml

WANTED = [
    # (argument index, CRD metadata.name, version, output file)
    (1, "wasmplugins.extensions.istio.io", "v1alpha1", "istio-wasmplugin-v1alpha1.json"),
    (1, "serviceentries.networking.istio.io", "v1", "istio-serviceentry-v1.json"),
    (1, "destinationrules.networking.istio.io", "v1", "istio-destinationrule-v1.json"),
    (2, "envoyextensionpolicies.gateway.envoyproxy.io", "v1alpha1",
     "envoy-gateway-envoyextensionpolicy-v1alpha1.json"),
]


def main():
    docs = {}
    for i in (1, 2):
        with open(sys.argv[i]) as f:
            for d in yaml.safe_load_all(f):
                if d and d.get("kind") == "CustomResourceDefinition":
                    docs[(i, d["metadata"]["name"])] = d
    for i, name, version, out in WANTED:
        crd = docs[(i, name)]
        (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        schema = v["schema"]["openAPIV3Schema"]
        with open(out, "w") as f:
            json.dump(schema, f, indent=2, sort_keys=True)
            f.write("\n")
        print(out, crd["spec"]["group"], crd["spec"]["names"]["kind"], version,
              "served" if v.get("served") else "NOT served")


main()
