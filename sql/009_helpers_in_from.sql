-- 009_helpers_in_from.sql — _held and _price_in_force become set-returning
-- SQL functions, used in FROM, where the planner inlines them into the
-- caller's statement (and PL/pgSQL keeps that plan for the session). As
-- scalar functions with a SET clause they were parsed and planned again on
-- every call: about a quarter of api_reconcile's cost and most of
-- api_balance's (docs/benchmarks.md, "The stored functions"). A result type
-- cannot be changed by CREATE OR REPLACE, so they are dropped here and
-- re-created by sql/functions/ in the same transaction (sql/README.md:
-- private helpers may change freely).
DROP FUNCTION IF EXISTS billing._held(text, uuid);
DROP FUNCTION IF EXISTS billing._price_in_force(text);
