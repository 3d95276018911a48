//! OpenAPI document and Swagger UI router (placeholder).
