//! placeholder created by the lead so the workspace loads; the node helper replaces this file.
