SELECT DISTINCT name, kind FROM operations WHERE service = %(service)s ORDER BY name, kind
