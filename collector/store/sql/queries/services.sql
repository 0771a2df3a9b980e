SELECT DISTINCT service FROM operations ORDER BY service
