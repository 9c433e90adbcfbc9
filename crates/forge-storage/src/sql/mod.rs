//! The SQL layer, one concern per module: [`backend`] runs statements on SQLite or PostgreSQL,
//! [`queries`] holds their text, [`rows`] maps result rows to the model, [`search`] turns user text
//! into patterns, and [`repository`] implements [`Repository`](crate::Repository) with them.

mod backend;
mod queries;
mod repository;
mod rows;
mod search;

pub(crate) use backend::Pools;
pub(crate) use repository::SqlRepository;
