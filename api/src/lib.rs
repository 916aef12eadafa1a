//! The CEP service.
