#!/usr/bin/env python3
"""Turn a kube-apiserver's OpenAPI v3 documents into JSON schemas for kubeconform.

    openapi-to-jsonschema.py OUT_DIR DOC.json [DOC.json ...]

Each DOC is one group-version document as served at /openapi/v3/apis/<group>/<version> (or
/openapi/v3/api/v1); custom resources are included once their CRDs are applied. For every kind
(`x-kubernetes-group-version-kind`) this writes OUT_DIR/<kind><suffix>.json with the suffix
kubeconform puts in `{{ .ResourceKind }}{{ .KindSuffix }}`: `-<version>` for the core group,
`-<first label of the group>-<version>` otherwise (service-v1.json, deployment-apps-v1.json,
logcluster-strand-v1alpha1.json). Use it as

    kubeconform -strict -schema-location 'OUT_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'

The schemas are standalone (every reference a local `#/definitions/...`) and strict: an object
with declared properties and no `additionalProperties` or `x-kubernetes-preserve-unknown-fields`
gets `additionalProperties: false`, so a misspelt field fails as it would on the server. Written
for kubeconform's default draft 4, where a `$ref` hides its siblings: such siblings are kept by
moving the `$ref` into an `allOf`. Standard library only.
"""
import json
import os
import sys

REF_PREFIX = "#/components/schemas/"
# The API server decodes these from JSON numbers as well as strings, whatever the OpenAPI says.
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
# OpenAPI-only keywords with no JSON Schema meaning (x-kubernetes-* are dropped separately).
DROP = {"nullable", "discriminator", "readOnly", "writeOnly", "xml", "externalDocs", "example",
        "deprecated"}


def convert(node):
    """One OpenAPI v3 schema node to a draft 4 JSON schema node (recursively)."""
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in DROP or key.startswith("x-"):
            continue
        if key == "$ref":
            out[key] = "#/definitions/" + value[len(REF_PREFIX):] if value.startswith(REF_PREFIX) else value
        elif key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: convert(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = convert(value)
        else:
            # enum, default, required, description...: data, not schemas.
            out[key] = value

    # int-or-string: `format: int-or-string` on core types, the extension on CRD fields.
    if out.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        out.pop("format", None)
        out.pop("type", None)
        if "anyOf" not in out and "oneOf" not in out:
            out["anyOf"] = INT_OR_STRING

    # Strict: undeclared fields are errors, unless the schema keeps unknown fields on purpose.
    if ("properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False

    # Draft 4 ignores everything beside a $ref: keep the siblings by moving the $ref.
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}] + out.get("allOf", [])

    if node.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = out["enum"] + [None]
        elif "type" not in out:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def refs(node, found):
    """Names of the definitions a converted node refers to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/definitions/"):
                found.add(value[len("#/definitions/"):])
            else:
                refs(value, found)
    elif isinstance(node, list):
        for n in node:
            refs(n, found)
    return found


def file_name(group, version, kind):
    # kubeconform's KindSuffix: "-" + first label of "<group>/<version>"'s group part, then the
    # version; for the core group ("v1") just "-v1".
    api_version = f"{group}/{version}" if group else version
    parts = api_version.split("/")
    suffix = "-" + parts[0].split(".")[0].lower()
    if len(parts) > 1:
        suffix += "-" + parts[1].lower()
    return f"{kind.lower()}{suffix}.json"


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__.strip().split("\n\n")[1])
    out_dir, docs = argv[1], argv[2:]
    schemas = {}
    for path in docs:
        with open(path) as f:
            doc = json.load(f)
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            schemas.setdefault(name, schema)
    if not schemas:
        sys.exit("openapi-to-jsonschema: no components.schemas in the documents")

    definitions = {name: convert(s) for name, s in schemas.items()}
    # The API server decodes quantities from numbers too (`cpu: 1`); OpenAPI says string.
    if QUANTITY in definitions:
        definitions[QUANTITY] = {
            "description": definitions[QUANTITY].get("description", ""),
            "anyOf": [{"type": "string"}, {"type": "number"}],
        }

    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for name, schema in sorted(schemas.items()):
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        # A schema shared by many groups (DeleteOptions, WatchEvent) is not a resource.
        if len(gvks) != 1:
            continue
        gvk = gvks[0]
        fname = file_name(gvk.get("group", ""), gvk["version"], gvk["kind"])
        if fname in written and written[fname] != name:
            sys.exit(f"openapi-to-jsonschema: {written[fname]} and {name} both map to {fname}")
        written[fname] = name

        # The kind's schema itself at the root, plus every definition it reaches.
        root = dict(definitions[name])
        needed, missing, todo = set(), set(), refs(root, set())
        while todo:
            ref = todo.pop()
            if ref in needed or ref in missing:
                continue
            if ref not in definitions:
                missing.add(ref)
                continue
            needed.add(ref)
            todo |= refs(definitions[ref], set())
        if missing:
            sys.exit(f"openapi-to-jsonschema: {name} refers to undefined {', '.join(sorted(missing))}")
        root["definitions"] = {r: definitions[r] for r in sorted(needed)}
        with open(os.path.join(out_dir, fname), "w") as f:
            json.dump(root, f, indent=1, sort_keys=True)
            f.write("\n")
    print(f"openapi-to-jsonschema: {len(written)} kinds from {len(docs)} documents into {out_dir}")


if __name__ == "__main__":
    main(sys.argv)
