//! The built-in policies specgate implements: their Zuplo export names, the runtime types that
//! implement them, and their typed options (checked at generation time with positions, then
//! deserialized once at start-up by the runtime).

/// Which side of the handler a policy runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Before the handler.
    Inbound,
    /// After the handler.
    Outbound,
}

/// The type of an option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptType {
    /// A string.
    String,
    /// true or false.
    Bool,
    /// A non-negative integer.
    Integer,
    /// A positive number (fractions allowed).
    Number,
    /// An array of strings.
    StringArray,
    /// An array of non-negative integers.
    IntegerArray,
    /// One comma-separated string or an array of strings.
    StringOrArray,
    /// `[{name, value, overwrite?}]`.
    NameValueList,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// true, a date string or a number.
    BoolStringOrNumber,
    /// A JSON object.
    Object,
    /// An array of objects.
    ObjectArray,
    /// An array of strings or an object (checked at start-up).
    ArrayOrObject,
    /// An object whose values are positive integers (`{"requests": 100}`).
    Counts,
    /// Status codes and ranges: `"200-299, 304"` or an array of codes.
    StatusCodes,
}

impl OptType {
    /// How the type reads in messages.
    pub fn describe(self) -> std::string::String {
        match self {
            OptType::String => "a string".into(),
            OptType::Bool => "true or false".into(),
            OptType::Integer => "a non-negative integer".into(),
            OptType::Number => "a positive number".into(),
            OptType::StringArray => "an array of strings".into(),
            OptType::IntegerArray => "an array of non-negative integers".into(),
            OptType::StringOrArray => "a string or an array of strings".into(),
            OptType::NameValueList => "an array of {\"name\", \"value\"} objects".into(),
            OptType::Enum(values) => format!("one of {}", values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")),
            OptType::BoolStringOrNumber => "true, a date string or a number".into(),
            OptType::Object => "an object".into(),
            OptType::ObjectArray => "an array of objects".into(),
            OptType::ArrayOrObject => "an array or an object".into(),
            OptType::Counts => "an object of positive integers, e.g. {\"requests\": 100}".into(),
            OptType::StatusCodes => "status codes and ranges like \"200-299, 304\", or an array of status codes".into(),
        }
    }
}

/// One option of a built-in policy.
#[derive(Debug, Clone, Copy)]
pub struct OptSpec {
    /// The option name as Zuplo spells it.
    pub name: &'static str,
    /// Its type.
    pub ty: OptType,
    /// Whether it must be present.
    pub required: bool,
    /// What it does (for documentation and help texts).
    pub doc: &'static str,
}

/// A built-in policy.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Export of `$import(@zuplo/runtime)`.
    pub export: &'static str,
    /// The usual `policyType` label.
    pub policy_type: &'static str,
    /// The runtime type (under `::specgate_runtime::policies`).
    pub rust_type: &'static str,
    /// Inbound or outbound.
    pub side: Side,
    /// Options.
    pub options: &'static [OptSpec],
    /// At least one of these options must be present (beyond `required` ones).
    pub one_of: &'static [&'static str],
}

const fn opt(name: &'static str, ty: OptType, required: bool, doc: &'static str) -> OptSpec {
    OptSpec { name, ty, required, doc }
}

const fn builtin(export: &'static str, policy_type: &'static str, rust_type: &'static str, side: Side, options: &'static [OptSpec]) -> Builtin {
    Builtin { export, policy_type, rust_type, side, options, one_of: &[] }
}

use OptType::*;
use Side::*;

const HEADERS_SET: &[OptSpec] = &[opt("headers", NameValueList, true, "headers to set: [{name, value, overwrite (default true)}]")];
const HEADERS_REMOVE: &[OptSpec] = &[opt("headers", StringArray, true, "names of the headers to remove")];
const HEADERS_CLEAR: &[OptSpec] = &[opt("exclude", StringArray, false, "names of the headers to keep")];

/// The fields of a `corsPolicies` entry besides `name`.
pub const CORS_FIELDS: &[OptSpec] = &[
    opt("allowedOrigins", StringOrArray, true, "origins allowed to call: `*`, `https://app.example.com`, or `https://*.example.com` (one subdomain level); `$env(X)` allowed"),
    opt("allowedMethods", StringOrArray, false, "methods a preflight may ask for (default: the methods of the path's routes)"),
    opt("allowedHeaders", StringOrArray, false, "request headers a preflight may ask for (`*` allows any)"),
    opt("exposeHeaders", StringOrArray, false, "response headers the page's script may read"),
    opt("maxAge", Integer, false, "seconds a browser may cache a preflight answer"),
    opt("allowCredentials", Bool, false, "allow cookies and Authorization (the origin is then reflected, never `*`)"),
];

/// Every built-in policy, by export name.
pub const BUILTINS: &[Builtin] = &[
    builtin("SetHeadersInboundPolicy", "set-headers-inbound", "SetHeadersInbound", Inbound, HEADERS_SET),
    builtin("SetHeadersOutboundPolicy", "set-headers-outbound", "SetHeadersOutbound", Outbound, HEADERS_SET),
    builtin("RemoveHeadersInboundPolicy", "remove-headers-inbound", "RemoveHeadersInbound", Inbound, HEADERS_REMOVE),
    builtin("RemoveHeadersOutboundPolicy", "remove-headers-outbound", "RemoveHeadersOutbound", Outbound, HEADERS_REMOVE),
    builtin("ClearHeadersInboundPolicy", "clear-headers-inbound", "ClearHeadersInbound", Inbound, HEADERS_CLEAR),
    builtin("ClearHeadersOutboundPolicy", "clear-headers-outbound", "ClearHeadersOutbound", Outbound, HEADERS_CLEAR),
    builtin(
        "SetQueryParamsInboundPolicy",
        "set-query-params-inbound",
        "SetQueryParamsInbound",
        Inbound,
        &[opt("params", NameValueList, true, "query parameters to set: [{name, value, overwrite (default true)}]")],
    ),
    builtin(
        "RemoveQueryParamsInboundPolicy",
        "remove-query-params-inbound",
        "RemoveQueryParamsInbound",
        Inbound,
        &[opt("params", StringArray, true, "names of the query parameters to remove")],
    ),
    builtin(
        "QueryParamToHeaderInboundPolicy",
        "query-param-to-header-inbound",
        "QueryParamToHeaderInbound",
        Inbound,
        &[
            opt("queryParam", String, true, "the query parameter to read"),
            opt("headerName", String, true, "the header to set"),
            opt("headerValue", String, true, "the header value; {value} stands for the parameter's value"),
            opt("removeFromUrl", Bool, false, "remove the parameter from the URL (default true)"),
        ],
    ),
    builtin(
        "ChangeMethodInboundPolicy",
        "change-method-inbound",
        "ChangeMethodInbound",
        Inbound,
        &[opt("method", Enum(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "post", "put", "patch", "delete", "head", "options"]), true, "the method to send upstream")],
    ),
    builtin("SetBodyInboundPolicy", "set-body-inbound", "SetBodyInbound", Inbound, &[opt("body", String, true, "the new request body")]),
    builtin(
        "SetStatusOutboundPolicy",
        "set-status-outbound",
        "SetStatusOutbound",
        Outbound,
        &[opt("status", Integer, true, "the response status"), opt("statusText", String, false, "accepted, not sent (HTTP/2 has no reason phrase)")],
    ),
    builtin(
        "ReplaceStringOutboundPolicy",
        "replace-string-outbound",
        "ReplaceStringOutbound",
        Outbound,
        &[
            opt("mode", Enum(&["string", "regexp"]), true, "plain string or regular expression (/pattern/flags)"),
            opt("match", String, true, "what to find"),
            opt("replaceWith", String, true, "the replacement ($1 and $& in regexp mode)"),
        ],
    ),
    builtin(
        "RequestSizeLimitInboundPolicy",
        "request-size-limit-inbound",
        "RequestSizeLimitInbound",
        Inbound,
        &[
            opt("maxSizeInBytes", Integer, true, "the largest accepted body"),
            opt("trustContentLengthHeader", Bool, false, "trust Content-Length instead of counting (default false)"),
        ],
    ),
    builtin(
        "RequireOriginInboundPolicy",
        "require-origin-inbound",
        "RequireOriginInbound",
        Inbound,
        &[
            opt("origins", StringOrArray, true, "allowed origins, comma-separated"),
            opt("failureDetail", String, false, "the detail of the 403 problem"),
        ],
    ),
    Builtin {
        export: "IpAddressRestrictionInboundPolicy",
        policy_type: "ip-address-restriction-inbound",
        rust_type: "IpAddressRestrictionInbound",
        side: Inbound,
        options: &[
            opt("allow", StringArray, false, "addresses and CIDR ranges allowed"),
            opt("deny", StringArray, false, "addresses and CIDR ranges refused"),
        ],
        one_of: &["allow", "deny"],
    },
    builtin(
        "MockApiInboundPolicy",
        "mock-api-inbound",
        "MockApiInbound",
        Inbound,
        &[
            opt("random", Bool, false, "pick a random matching example"),
            opt("responsePrefixFilter", String, false, "status code prefix of the responses to use (default \"2\")"),
            opt("contentType", String, false, "only examples of this media type"),
            opt("exampleName", String, false, "only the example with this name"),
        ],
    ),
    builtin(
        "HttpDeprecationOutboundPolicy",
        "http-deprecation-outbound",
        "HttpDeprecationOutbound",
        Outbound,
        &[
            opt("deprecation", BoolStringOrNumber, true, "true, an ISO 8601 date or a Unix timestamp"),
            opt("sunset", String, false, "ISO 8601 date of removal"),
            opt("link", String, false, "URL of the deprecation notes"),
        ],
    ),
    builtin("SleepInboundPolicy", "sleep-inbound", "SleepInbound", Inbound, &[opt("sleepInMs", Integer, true, "delay in milliseconds")]),
    builtin(
        "RateLimitInboundPolicy",
        "rate-limit-inbound",
        "RateLimitInbound",
        Inbound,
        &[
            opt("rateLimitBy", Enum(&["ip", "user", "function", "all"]), true, "what a counter belongs to"),
            opt("requestsAllowed", Integer, true, "requests allowed per window"),
            opt("timeWindowMinutes", Number, true, "the sliding window, in minutes (fractions allowed)"),
            opt("identifier", Object, false, "{export, module}: the function that names the counter (rateLimitBy function)"),
            opt("headerMode", Enum(&["none", "retry-after"]), false, "send Retry-After on 429 (default retry-after)"),
            opt("mode", Enum(&["strict", "async"]), false, "wait for the shared store (strict) or not (async)"),
            opt("throwOnFailure", Bool, false, "answer 503 when the shared store is unreachable (default: let requests through)"),
            opt("rateLimitHeaders", Bool, false, "send the IETF RateLimit and RateLimit-Policy headers (on 429s and admitted responses)"),
        ],
    ),
    builtin(
        "ComplexRateLimitInboundPolicy",
        "complex-rate-limit-inbound",
        "ComplexRateLimitInbound",
        Inbound,
        &[
            opt("rateLimitBy", Enum(&["ip", "user", "function", "all"]), true, "what a set of counters belongs to"),
            opt("timeWindowMinutes", Number, true, "the sliding window, in minutes (fractions allowed)"),
            opt("limits", Counts, true, "limit per named counter and window, e.g. {\"requests\": 100, \"tokens\": 5000}"),
            opt("identifier", Object, false, "{export, module}: the function that names the counters (rateLimitBy function)"),
            opt("headerMode", Enum(&["none", "retry-after"]), false, "send Retry-After on 429 (default retry-after)"),
            opt("mode", Enum(&["strict", "async"]), false, "wait for the shared store (strict) or not (async)"),
            opt("throwOnFailure", Bool, false, "answer 503 when the shared store is unreachable (default: let requests through)"),
        ],
    ),
    builtin(
        "QuotaInboundPolicy",
        "quota-inbound",
        "QuotaInbound",
        Inbound,
        &[
            opt("period", Enum(&["hourly", "daily", "weekly", "monthly"]), true, "the length of a quota cycle"),
            opt("quotaBy", Enum(&["user", "function"]), true, "what a quota belongs to"),
            opt("quotaAnchorMode", Enum(&["first-api-call", "function"]), false, "where cycles start (default first-api-call)"),
            opt("allowances", Counts, false, "allowance per meter and cycle, e.g. {\"requests\": 1000}"),
            opt("quotaOnStatusCodes", StatusCodes, false, "which response statuses are counted (default \"200-299\")"),
            opt("identifier", Object, false, "{module, getQuotaDetailExport, getAnchorDateExport}: the custom functions"),
            opt("throwOnFailure", Bool, false, "answer 503 when the shared store is unreachable (default: let requests through)"),
        ],
    ),
    builtin(
        "CachingInboundPolicy",
        "caching-inbound",
        "CachingInbound",
        Inbound,
        &[
            opt("cacheId", String, false, "scopes the entries with the policy name (change it to start from an empty cache)"),
            opt("cachedId", String, false, "the spelling of cacheId in some of Zuplo's examples (same meaning)"),
            opt("expirationSecondsTtl", Number, false, "how long a response is served from the cache, in seconds (default 60)"),
            opt("statusCodes", IntegerArray, false, "statuses that are stored (default 200, 206, 301, 302, 303, 404, 410)"),
            opt("cacheHttpMethods", StringArray, false, "methods that are cached (default [\"GET\"])"),
            opt("headers", StringOrArray, false, "request headers whose values are part of the key"),
            opt("dangerouslyIgnoreAuthorizationHeader", Bool, false, "share entries between callers with different Authorization headers"),
        ],
    ),
    builtin(
        "ApiKeyInboundPolicy",
        "api-key-inbound",
        "ApiKeyInbound",
        Inbound,
        &[
            opt("authHeader", String, false, "header carrying the key (default Authorization)"),
            opt("authScheme", String, false, "scheme before the key (default Bearer; \"\" for none)"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without a valid key through without a user"),
            opt("cacheTtlSeconds", Integer, false, "how long look-ups are cached (default 60)"),
            opt("bucketName", String, false, "the key bucket (default \"default\")"),
        ],
    ),
    Builtin {
        export: "OpenIdJwtInboundPolicy",
        policy_type: "open-id-jwt-auth-inbound",
        rust_type: "OpenIdJwtInbound",
        side: Inbound,
        options: &[
            opt("issuer", String, true, "expected iss claim"),
            opt("audience", StringOrArray, false, "expected aud claim (one string, or a list of accepted audiences)"),
            opt("jwkUrl", String, false, "URL of the issuer's JWKS"),
            opt("secret", String, false, "HMAC secret (HS256/384/512)"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without a token through without a user"),
            opt("subPropertyName", String, false, "claim used as request.user.sub (default sub)"),
            opt("headers", Object, false, "extra headers of the JWKS request"),
            opt("clockToleranceSeconds", Integer, false, "leeway for exp and nbf (default 30)"),
            opt("oAuthResourceMetadataEnabled", Bool, false, "accepted, no effect"),
        ],
        one_of: &["jwkUrl", "secret"],
    },
    builtin(
        "Auth0JwtInboundPolicy",
        "auth0-jwt-auth-inbound",
        "Auth0JwtInbound",
        Inbound,
        &[
            opt("auth0Domain", String, true, "tenant domain (issuer https://DOMAIN/)"),
            opt("audience", StringOrArray, false, "expected aud claim (one string, or a list of accepted audiences)"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without a token through"),
            opt("jwkUrl", String, false, "override of the JWKS URL"),
            opt("clockToleranceSeconds", Integer, false, "leeway for exp and nbf (default 30)"),
            opt("oAuthResourceMetadataEnabled", Bool, false, "accepted, no effect"),
        ],
    ),
    builtin(
        "OktaJwtInboundPolicy",
        "okta-jwt-auth-inbound",
        "OktaJwtInbound",
        Inbound,
        &[
            opt("issuerUrl", String, true, "the authorization server's issuer"),
            opt("audience", StringOrArray, false, "expected aud claim (one string, or a list of accepted audiences)"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without a token through"),
            opt("jwkUrl", String, false, "override of the JWKS URL"),
            opt("clockToleranceSeconds", Integer, false, "leeway for exp and nbf (default 30)"),
            opt("oAuthResourceMetadataEnabled", Bool, false, "accepted, no effect"),
        ],
    ),
    builtin(
        "CognitoJwtInboundPolicy",
        "cognito-jwt-auth-inbound",
        "CognitoJwtInbound",
        Inbound,
        &[
            opt("region", String, true, "AWS region of the user pool"),
            opt("userPoolId", String, true, "the user pool"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without a token through"),
            opt("jwkUrl", String, false, "override of the JWKS URL"),
            opt("clockToleranceSeconds", Integer, false, "leeway for exp and nbf (default 30)"),
            opt("oAuthResourceMetadataEnabled", Bool, false, "accepted, no effect"),
        ],
    ),
    builtin(
        "ClerkJwtInboundPolicy",
        "clerk-jwt-auth-inbound",
        "ClerkJwtInbound",
        Inbound,
        &[
            opt("frontendApiUrl", String, true, "the Clerk frontend API URL (issuer)"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without a token through"),
            opt("jwkUrl", String, false, "override of the JWKS URL"),
            opt("clockToleranceSeconds", Integer, false, "leeway for exp and nbf (default 30)"),
            opt("oAuthResourceMetadataEnabled", Bool, false, "accepted, no effect"),
        ],
    ),
    builtin(
        "FirebaseJwtInboundPolicy",
        "firebase-jwt-inbound",
        "FirebaseJwtInbound",
        Inbound,
        &[
            opt("projectId", String, true, "the Firebase project"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without a token through"),
            opt("jwkUrl", String, false, "override of the JWKS URL"),
            opt("clockToleranceSeconds", Integer, false, "leeway for exp and nbf (default 30)"),
            opt("oAuthResourceMetadataEnabled", Bool, false, "accepted, no effect"),
        ],
    ),
    builtin(
        "SupabaseJwtInboundPolicy",
        "supabase-jwt-auth-inbound",
        "SupabaseJwtInbound",
        Inbound,
        &[
            opt("secret", String, true, "the project's JWT secret (HS256)"),
            opt("requiredClaims", ArrayOrObject, false, "claims that must be present (names, or {claim: [allowed values]})"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without a token through"),
            opt("clockToleranceSeconds", Integer, false, "leeway for exp and nbf (default 30)"),
            opt("oAuthResourceMetadataEnabled", Bool, false, "accepted, no effect"),
        ],
    ),
    builtin("JwtScopesInboundPolicy", "jwt-scopes-inbound", "JwtScopesInbound", Inbound, &[opt("scopes", StringArray, true, "scopes the token must carry")]),
    builtin("JWTScopeValidationInboundPolicy", "jwt-scopes-inbound", "JwtScopesInbound", Inbound, &[opt("scopes", StringArray, true, "scopes the token must carry")]),
    builtin(
        "BasicAuthInboundPolicy",
        "basic-auth-inbound",
        "BasicAuthInbound",
        Inbound,
        &[
            opt("accounts", ObjectArray, true, "[{username, password, data}]"),
            opt("allowUnauthenticatedRequests", Bool, false, "let requests without credentials through"),
        ],
    ),
    builtin(
        "SetUpstreamApiKeyInboundPolicy",
        "set-upstream-api-key-inbound",
        "SetUpstreamApiKeyInbound",
        Inbound,
        &[
            opt("header", String, false, "header to set (default Authorization)"),
            opt("value", String, true, "its value, usually with $env(X)"),
            opt("overwrite", Bool, false, "replace an existing value (default true)"),
        ],
    ),
    builtin(
        "UpstreamZuploJwtAuthInboundPolicy",
        "upstream-zuplo-jwt-auth-inbound",
        "UpstreamJwtInbound",
        Inbound,
        &[
            opt("audience", String, true, "aud claim of the token"),
            opt("headerName", String, false, "header to set (default Authorization)"),
            opt("tokenPrefix", String, false, "prefix before the token (default Bearer)"),
            opt("expiresIn", Integer, false, "lifetime in seconds (default 300)"),
            opt("additionalClaims", Object, false, "claims added to the token"),
            opt("issuer", String, false, "iss claim (default UPSTREAM_JWT_ISSUER or specgate)"),
        ],
    ),
    builtin(
        "RequestValidationInboundPolicy",
        "request-validation-inbound",
        "RequestValidationInbound",
        Inbound,
        &[
            opt("validateBody", Enum(VALIDATION_ACTIONS), false, "the request body against its media type's schema (default none)"),
            opt("validateQueryParameters", Enum(VALIDATION_ACTIONS), false, "query parameters (default none)"),
            opt("validatePathParameters", Enum(VALIDATION_ACTIONS), false, "path parameters (default none)"),
            opt("validateHeaders", Enum(VALIDATION_ACTIONS), false, "header parameters (default none)"),
            opt("logLevel", Enum(&["error", "warn", "info", "debug"]), false, "level of the log line of a failure (default info)"),
            opt("includeRequestInLogs", Bool, false, "log the request's method, URL and headers with a failure (default false)"),
            opt("maxBodySizeInBytes", Integer, false, "largest body buffered for validation, else 413 (default 1048576; specgate extension)"),
        ],
    ),
    builtin(
        "ValidateJsonSchemaInbound",
        "validate-json-schema-inbound",
        "ValidateJsonSchemaInbound",
        Inbound,
        &[opt("validator", String, true, "$import(./schemas/x.json): the JSON Schema the body must match")],
    ),
];

/// What request-validation-inbound may do about each part of a request.
const VALIDATION_ACTIONS: &[&str] = &["none", "log-only", "reject-and-log", "reject-only"];

/// Exports of Zuplo built-ins that this version does not implement yet.
pub const NOT_YET: &[&str] = &[
    "GraphQLComplexityLimitInboundPolicy",
];

/// The built-in with this export name.
pub fn find(export: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.export == export)
}

/// One option of a built-in handler.
#[derive(Debug, Clone, Copy)]
pub struct HandlerOpt {
    /// The option name.
    pub name: &'static str,
    /// What values it takes (for documentation).
    pub ty: &'static str,
    /// Its default, or `required`.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// A built-in handler of `$import(@zuplo/runtime)`.
#[derive(Debug, Clone, Copy)]
pub struct HandlerSpec {
    /// The export name.
    pub export: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Its own options.
    pub options: &'static [HandlerOpt],
    /// Whether it also takes [`UPSTREAM_OPTIONS`].
    pub upstream_options: bool,
}

impl HandlerSpec {
    /// Every option name the handler accepts, its own first.
    pub fn option_names(&self) -> impl Iterator<Item = &'static str> {
        let upstream: &'static [HandlerOpt] = if self.upstream_options { UPSTREAM_OPTIONS } else { &[] };
        self.options.iter().chain(upstream).map(|o| o.name)
    }

    /// Whether the handler accepts option `name`.
    pub fn accepts(&self, name: &str) -> bool {
        self.option_names().any(|n| n == name)
    }
}

const fn hopt(name: &'static str, ty: &'static str, default: &'static str, doc: &'static str) -> HandlerOpt {
    HandlerOpt { name, ty, default, doc }
}

const TEMPLATE: &str = "a template string";
const FORWARD_SEARCH: HandlerOpt = hopt("forwardSearch", "true or false", "true", "append the request's query string to the upstream URL");
const FOLLOW_REDIRECTS: HandlerOpt = hopt(
    "followRedirects",
    "true or false",
    "false",
    "follow the upstream's redirects (at most 10; 303, and 301/302 after a POST, continue as GET) instead of passing them to the client; a request body (up to 8 MiB, else 413) is kept to be replayed on 307/308",
);

/// The upstream options of `urlForwardHandler` and `urlRewriteHandler` (specgate extensions).
pub const UPSTREAM_OPTIONS: &[HandlerOpt] = &[
    hopt(
        "upstreams",
        "an array of base URLs, each a string or `{url, weight}`",
        "—",
        "several upstreams (at most 64) instead of `baseUrl` (the two exclude each other); `url` is text and `${env.X}` only, `weight` 1–1000 (default 1). Equal weights: round-robin; otherwise smooth weighted round-robin. With urlRewriteHandler, `rewritePattern` must then be a path appended to the chosen upstream. Routes listing the same set share its ejection and health state",
    ),
    hopt("timeoutMs", "an integer, 1–3600000", "`UPSTREAM_TIMEOUT_SECONDS`", "time for the response head, all attempts included; exceeded: 504"),
    hopt(
        "connectTimeoutMs",
        "an integer, 1–3600000, at most `timeoutMs`",
        "`UPSTREAM_CONNECT_TIMEOUT_SECONDS`",
        "time for one TCP connection attempt (the route gets its own connection pool); exceeded: 504 once retries are spent",
    ),
    hopt(
        "retries",
        "`{maxRetries (0–5, default 1), budgetPercent (1–100, default 20), backoffMs (0–10000, default 25)}` or a number (`maxRetries`)",
        "none; 1 with two or more `upstreams`",
        "retry when no connection was made (any method) or the connection broke before an answer (idempotent methods with a body of at most 64 KiB); never after a response head or past `timeoutMs`; a per-route budget caps retries at `budgetPercent` of requests",
    ),
    hopt(
        "ejection",
        "`{consecutiveFailures (1–100, default 5), cooldownMs (default 10000), maxCooldownMs (default 300000)}` or false",
        "on with two or more `upstreams`",
        "passive health: that many failures in a row take an upstream out for `cooldownMs`, doubled on each repeat up to `maxCooldownMs`; the last upstream in rotation is never ejected",
    ),
    hopt(
        "healthCheck",
        "`{path, intervalMs (100–3600000, default 10000), timeoutMs (default 2000), unhealthyThreshold (default 3), healthyThreshold (default 2)}`",
        "off",
        "active health for `upstreams`: `GET base + path` every `intervalMs`, 2xx/3xx within `timeoutMs` passes; thresholds of failed/passed probes in a row take an upstream out and bring it back",
    ),
];

/// Every built-in handler, by export name.
pub const HANDLERS: &[HandlerSpec] = &[
    HandlerSpec {
        export: "urlForwardHandler",
        summary: "Forwards the request to `baseUrl` + the request path (+ the query string). `baseUrl` may be `local://NAME` for a gateway built into the same binary.",
        options: &[
            hopt("baseUrl", TEMPLATE, "required unless `upstreams`", "the upstream's base URL, e.g. `${env.API_URL}`; request values are encoded for the URL part they land in"),
            FORWARD_SEARCH,
            FOLLOW_REDIRECTS,
        ],
        upstream_options: true,
    },
    HandlerSpec {
        export: "urlRewriteHandler",
        summary: "Sends the request to the URL `rewritePattern` builds (e.g. `${env.API_URL}/v2/users/${params.id}`).",
        options: &[
            hopt("rewritePattern", TEMPLATE, "required", "the whole upstream URL; with `upstreams`, the path appended to the chosen upstream. `local://NAME/...` reaches a gateway of the same binary"),
            FORWARD_SEARCH,
            FOLLOW_REDIRECTS,
        ],
        upstream_options: true,
    },
    HandlerSpec {
        export: "redirectHandler",
        summary: "Answers with a redirect to `location`.",
        options: &[
            hopt("location", TEMPLATE, "required", "the redirect target (a URL or a path); cannot be `local://`"),
            hopt("status", "one of 301, 302, 303, 307, 308", "302", "the redirect status"),
        ],
        upstream_options: false,
    },
    HandlerSpec {
        export: "webSocketHandler",
        summary: "Passes a WebSocket handshake through (X-Forwarded-* added) and, on 101, splices both connections until either closes; a request that is not a handshake gets 426.",
        options: &[hopt("rewritePattern", TEMPLATE, "required", "the upstream URL: `ws:`, `wss:`, `http:` or `https:`")],
        upstream_options: false,
    },
    HandlerSpec {
        export: "openApiSpecHandler",
        summary: "Serves the project's public OpenAPI document: every `config/*.oas.*` merged, `$ref`s bundled, `x-zuplo-*` removed, compiled into the binary.",
        options: &[hopt("openApiFilePath", "a string", "—", "accepted for compatibility; the bundled document of the whole project is served")],
        upstream_options: false,
    },
];

/// The built-in handler exported as `export`.
pub fn handler(export: &str) -> Option<&'static HandlerSpec> {
    HANDLERS.iter().find(|h| h.export == export)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_catalog_lists_exactly_the_supported_handlers() {
        let mut listed: Vec<&str> = HANDLERS.iter().map(|h| h.export).collect();
        let mut supported = crate::project::SUPPORTED_HANDLERS.to_vec();
        listed.sort_unstable();
        supported.sort_unstable();
        assert_eq!(listed, supported);
        for h in HANDLERS {
            let names: Vec<&str> = h.option_names().collect();
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{} lists an option twice", h.export);
        }
    }
}
