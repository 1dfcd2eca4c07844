//! RateLimitLayer: keyed token buckets for requests and tokens
