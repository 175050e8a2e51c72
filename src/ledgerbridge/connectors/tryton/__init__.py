"""Tryton (8.x) as a real ERP target over JSON-RPC: journals, invoices, master data, timesheets."""
