// Loads the rpcd ucode plugin given as ARGV[0] the way rpcd does (run the
// file, take the returned signature object) and prints the JSON answer of
// luci.pepwrt getStatus.
let signature = loadfile(ARGV[0])();
let answer = signature['luci.pepwrt'].getStatus.call({}, {});
printf('%J\n', answer);
