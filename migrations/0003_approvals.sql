-- 0003_approvals: reserved for the approvals toolset (owned by that branch, which replaces this
-- placeholder with the real migration when both are merged). It changes nothing, so the numbering
-- stays contiguous for 0004_inventory.
SELECT 1;
