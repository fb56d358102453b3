-- Where the plugin finds the pattern catalog (catalog/aws_patterns.yml converted to JSON).
--
-- The default is the plugin's own directory in the Lua tree of Kong's packages and images
-- (/usr/local/share/lua/5.1), so a catalog installed beside handler.lua needs no setting. A
-- plugin installed elsewhere sets config.catalog_path; a missing catalog fails the requests of
-- that plugin instance closed (500), it never lets them through unmasked.

return {
  DEFAULT = "/usr/local/share/lua/5.1/kong/plugins/aws-masker/aws_patterns.json",
}
