//! Request metadata (RequestMeta, Priority, ClientKey), MetaLayer and the shared error mapping of llmgate
