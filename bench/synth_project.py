#!/usr/bin/env python3
"""Writes a synthetic specgate project with N operations, for generator-scale measurements.

Usage: bench/synth_project.py N OUT_DIR

The project looks like a large real API: resources nested two and three levels deep
(/v1/r17/{id}/items/{itemId}), literal routes before templated ones, a mix of urlForwardHandler
and urlRewriteHandler with path parameters in the template, and inbound/outbound chains drawn
from a dozen policies (API key, rate limit, header policies, request validation of a JSON body
with a component schema). Deterministic: the same N gives the same files.
"""
import json
import os
import sys


def main():
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    n, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(os.path.join(out, "config"), exist_ok=True)
    paths = {}
    count = 0
    resource = 0
    chains = [
        {"inbound": ["api-key", "rate-limit"], "outbound": ["powered-by"]},
        {"inbound": ["set-tenant", "remove-debug"]},
        {"inbound": ["api-key", "set-tenant"]},
        {"inbound": ["standard"], "outbound": ["powered-by", "strip-server"]},
        {},
    ]

    def route(kind, op_id, path, body=False):
        nonlocal count
        chain = chains[count % len(chains)]
        if body and "validate" not in chain.get("inbound", []):
            chain = {"inbound": ["api-key", "validate"]}
        if kind == "forward":
            handler = {"export": "urlForwardHandler", "module": "$import(@zuplo/runtime)",
                       "options": {"baseUrl": "${env.API_URL}"}}
        else:
            target = path.replace("{+", "{").replace("{", "${params.").replace("/v1/", "/internal/")
            handler = {"export": "urlRewriteHandler", "module": "$import(@zuplo/runtime)",
                       "options": {"rewritePattern": "${env.API_URL}" + target}}
        op = {"operationId": op_id, "responses": {"200": {"description": "ok"}},
              "x-zuplo-route": {"corsPolicy": "none", "handler": handler, "policies": chain}}
        if body:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Item"}}}}
        count += 1
        return op

    while count < n:
        r = f"/v1/r{resource}"
        ops = [
            (r, "get", "forward", False),
            (r, "post", "forward", True),
            (f"{r}/search", "get", "rewrite", False),
            (r + "/{id}", "get", "rewrite", False),
            (r + "/{id}", "put", "forward", True),
            (r + "/{id}", "delete", "forward", False),
            (r + "/{id}/items", "get", "rewrite", False),
            (r + "/{id}/items/{itemId}", "get", "rewrite", False),
            (r + "/{id}/items/{itemId}", "patch", "forward", True),
            (r + "/{id}/files/{+path}", "get", "rewrite", False),
        ]
        for path, method, kind, body in ops:
            if count >= n:
                break
            paths.setdefault(path, {})[method] = route(kind, f"{method}R{resource}_{count}", path, body)
        resource += 1

    doc = {
        "openapi": "3.1.0",
        "info": {"title": f"Synthetic API with {n} operations", "version": "1.0.0"},
        "paths": paths,
        "components": {"schemas": {"Item": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "maxLength": 64},
                           "count": {"type": "integer", "minimum": 0},
                           "tags": {"type": "array", "items": {"type": "string"}}}}}},
    }
    with open(os.path.join(out, "config", "routes.oas.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    def builtin(name, export, options):
        return {"name": name, "policyType": name, "handler": {
            "export": export, "module": "$import(@zuplo/runtime)", "options": options}}

    policies = [
        builtin("api-key", "ApiKeyInboundPolicy", {"allowUnauthenticatedRequests": False}),
        builtin("rate-limit", "RateLimitInboundPolicy",
                {"rateLimitBy": "ip", "requestsAllowed": 1000, "timeWindowMinutes": 1}),
        builtin("set-tenant", "SetHeadersInboundPolicy", {"headers": [{"name": "x-tenant", "value": "synthetic"}]}),
        builtin("remove-debug", "RemoveHeadersInboundPolicy", {"headers": ["x-debug"]}),
        builtin("validate", "RequestValidationInboundPolicy",
                {"validateBody": "reject-and-log", "validatePathParameters": "reject-and-log"}),
        builtin("powered-by", "SetHeadersOutboundPolicy", {"headers": [{"name": "x-powered-by", "value": "specgate"}]}),
        builtin("strip-server", "RemoveHeadersOutboundPolicy", {"headers": ["server"]}),
        {"name": "standard", "policyType": "composite-inbound", "handler": {
            "export": "CompositeInboundPolicy", "module": "$import(@zuplo/runtime)",
            "options": {"policies": ["set-tenant", "remove-debug", "rate-limit"]}}},
    ]
    with open(os.path.join(out, "config", "policies.json"), "w") as f:
        json.dump({"policies": policies}, f, indent=2)
        f.write("\n")
    print(f"{out}: {count} operations on {len(paths)} paths")


if __name__ == "__main__":
    main()
