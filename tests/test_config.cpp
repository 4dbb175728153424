// The runtime configuration file (runtime/app/config.h): bad files and their messages (line:column, key path, the
// expectation, and "did you mean" where a known key or value is close), good files and their round trip through
// format_config, the commented default file, and the precedence of command-line flags over the file (hetmoe
// generate --config).

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <string>

#include "runtime/app/config.h"
#include "tests/cli_runner.h"

namespace hetmoe {
namespace {

struct BadFile {
  const char* name;
  const char* text;
  std::vector<const char*> expected;  // substrings of the error message
};

// Each bad file with the pieces its message must hold: "SOURCE:LINE:COLUMN", the key path, what was expected and,
// where a known key or value is close, the suggestion.
const BadFile kBadFiles[] = {
    {"UnknownTable", "[thread]\ncount = 4\n", {"t.toml:1:2:", "unknown key 'thread'", "did you mean 'threads'?"}},
    {"UnknownKeyInTable",
     "[threads]\nper_nod = 3\n",
     {"t.toml:2:1:", "unknown key 'threads.per_nod'", "known in [threads]: count, per_node",
      "did you mean 'threads.per_node'?"}},
    {"KeyInTheWrongTable",
     "context = 4096\n",
     {"t.toml:1:1:", "unknown key 'context'", "did you mean 'model.context'?"}},
    {"StringForInteger",
     "[threads]\ncount = \"8\"\n",
     {"t.toml:2:9:", "threads.count", "expected an integer in 1..4096", "got string"}},
    {"ZeroThreads", "[threads]\ncount = 0\n", {"t.toml:2:9:", "threads.count", "1..4096", "got integer 0"}},
    {"FloatForInteger",
     "[model]\ncontext = 4096.0\n",
     {"t.toml:2:11:", "model.context", "expected an integer in 1..16777216 tokens", "got float"}},
    {"ContextTooLong", "[model]\ncontext = 16777217\n", {"t.toml:2:11:", "model.context", "1..16777216"}},
    {"BadKvType",
     "[model]\nkv_type = \"f8\"\n",
     {"t.toml:2:11:", "model.kv_type", "expected one of 'f16', 'f32', 'q8_0', 'q4_0'", "got string 'f8'"}},
    {"BadKvTypeOfK",
     "[model]\nkv_type_k = \"q5_0\"\n",
     {"t.toml:2:13:", "model.kv_type_k", "expected one of 'f16', 'f32', 'q8_0', 'q4_0'", "got string 'q5_0'"}},
    {"MisspelledNumaPolicy",
     "[numa]\npolicy = \"interleaved\"\n",
     {"t.toml:2:10:", "numa.policy", "'interleave', 'local', 'none'", "did you mean 'interleave'?"}},
    {"BadByteSizeUnit",
     "[gpu]\nvram_budget = \"6 gigs\"\n",
     {"t.toml:2:15:", "gpu.vram_budget", "expected a byte size", "\"6GiB\"", "unknown unit"}},
    {"NegativeByteSize",
     "[gpu]\nram_budget = -1\n",
     {"t.toml:2:14:", "gpu.ram_budget", "expected a byte size", "got integer -1"}},
    {"DuplicateCore",
     "[threads]\ncores = [0, 1, 1]\n",
     {"t.toml:2:16:", "threads.cores[2]", "distinct CPU ids", "listed twice"}},
    {"BadCpuListRange",
     "[threads]\ncores = \"7-3\"\n",
     {"t.toml:2:9:", "threads.cores", "CPU list string like \"0-7,16-23\"", "ends below its start"}},
    {"SmtNotBoolean", "[threads]\nsmt = \"yes\"\n", {"t.toml:2:7:", "threads.smt", "expected a boolean"}},
    {"AttentionBf16NotBoolean",
     "[model]\nattention_bf16 = 1\n",
     {"t.toml:2:18:", "model.attention_bf16", "expected a boolean", "got integer 1"}},
    {"TableExpected", "gpu = 1\n", {"t.toml:1:7:", "gpu: expected a table [gpu]", "got integer 1"}},
    {"OverrideMissingDevice",
     "[placement]\noverrides = [{layer = 1, expert = 2}]\n",
     {"t.toml:2:14:", "placement.overrides[0]: missing key 'device'", "device = \"cpu\" | \"gpu\""}},
    {"OverrideBadDevice",
     "[[placement.overrides]]\nlayer = 1\nexpert = 2\ndevice = \"tpu\"\n",
     {"t.toml:4:10:", "placement.overrides[0].device", "'cpu', 'gpu'", "did you mean 'cpu'?"}},
    {"OverrideUnknownKey",
     "[[placement.overrides]]\nlyer = 1\nlayer = 1\nexpert = 2\ndevice = \"gpu\"\n",
     {"t.toml:2:1:", "unknown key 'placement.overrides[0].lyer'", "did you mean 'placement.overrides[0].layer'?"}},
    {"LayerOutOfRange",
     "[placement]\noverrides = [{layer = 5000, expert = 0, device = \"cpu\"}]\n",
     {"t.toml:2:23:", "placement.overrides[0].layer", "0..4095"}},
    {"EmptyTensorPattern",
     "[placement]\ntensor_overrides = [{name = \"\", device = \"cpu\"}]\n",
     {"t.toml:2:29:", "placement.tensor_overrides[0].name", "expected a non-empty string"}},
    {"OldKeyName",
     "[placement]\nn_gpu_experts = 4\n",
     {"t.toml:2:1:", "unknown key 'placement.n_gpu_experts'", "did you mean 'placement.num_gpu_experts'?"}},
    {"DecayZero",
     "[placement.dynamic]\ndecay = 0\n",
     {"t.toml:2:9:", "placement.dynamic.decay", "expected a number in (0, 1]", "got integer 0"}},
    {"HysteresisAboveOne",
     "[placement.dynamic]\nhysteresis = 1.5\n",
     {"t.toml:2:14:", "placement.dynamic.hysteresis", "[0, 1]", "got float 1.5"}},
    {"ReplanIntervalZero",
     "[placement.dynamic]\nreplan_interval = 0\n",
     {"t.toml:2:19:", "placement.dynamic.replan_interval", "1..1048576 tokens"}},
    {"EmptyTraceOutput", "[trace]\noutput = \"\"\n", {"t.toml:2:10:", "trace.output", "non-empty string"}},
    {"ServerPortOutOfRange", "[server]\nport = 70000\n", {"t.toml:2:8:", "server.port", "0..65535"}},
    {"ServerParallelZero", "[server]\nparallel = 0\n", {"server.parallel", "1..256"}},
    {"ServerUnknownKey", "[server]\nparalel = 2\n", {"server.paralel", "did you mean 'server.parallel'"}},
    {"SyntaxError", "[model]\ncontext = \n", {"t.toml:2:", "TOML syntax error"}},
    {"DuplicateKey", "[model]\ncontext = 1\ncontext = 2\n", {"t.toml:3:", "TOML syntax error"}},
};

class BadConfigTest : public ::testing::TestWithParam<BadFile> {};

TEST_P(BadConfigTest, MessageNamesLineKeyAndExpectation) {
  const BadFile& f = GetParam();
  auto config = parse_config(f.text, "t.toml");
  ASSERT_FALSE(config) << f.text;
  EXPECT_EQ(config.error().code, ErrorCode::kFormat);
  for (const char* piece : f.expected)
    EXPECT_NE(config.error().message.find(piece), std::string::npos)
        << "missing \"" << piece << "\" in: " << config.error().message;
}

INSTANTIATE_TEST_SUITE_P(Files, BadConfigTest, ::testing::ValuesIn(kBadFiles),
                         [](const ::testing::TestParamInfo<BadFile>& info) { return std::string(info.param.name); });

TEST(ConfigTest, EveryProblemIsReportedInLineOrder) {
  auto config = parse_config("[threads]\ncount = 0\n[model]\nkv_type = 3\n[numa]\npolicy = \"x\"\n", "t.toml");
  ASSERT_FALSE(config);
  const std::string& m = config.error().message;
  const size_t a = m.find("t.toml:2:"), b = m.find("t.toml:4:"), c = m.find("t.toml:6:");
  ASSERT_NE(a, std::string::npos) << m;
  ASSERT_NE(b, std::string::npos) << m;
  ASSERT_NE(c, std::string::npos) << m;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
}

TEST(ConfigTest, EmptyFileSetsNothing) {
  auto config = parse_config("", "t.toml");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(*config, RuntimeConfig{});
}

TEST(ConfigTest, GoodFileParsesEveryKind) {
  const char* text = R"(
[threads]
count = 6
per_node = 3
cores = "0-2, 8,10-11"
smt = false
[numa]
policy = "interleave"
[gpu]
id = 1
vram_budget = "6GiB"
ram_budget = "1.5 GB"
[model]
context = 4096
kv_type = "f32"
kv_type_k = "q8_0"
kv_type_v = "q4_0"
attention_bf16 = true
[placement]
mode = "dynamic"
num_gpu_experts = 12
prefill_crossover = 48
[[placement.overrides]]
layer = 23
expert = 31
device = "cpu"
[[placement.tensor_overrides]]
name = "blk.*.attn_*.weight"
device = "gpu"
[placement.dynamic]
decay = 1
replan_interval = 32
max_migrations_per_step = 0
hysteresis = 0.25
[trace]
output = "run \"1\".json"
)";
  auto c = parse_config(text, "t.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->threads.count, 6);
  EXPECT_EQ(c->threads.per_node, 3);
  EXPECT_EQ(c->threads.cores, (std::vector<int>{0, 1, 2, 8, 10, 11}));
  EXPECT_EQ(c->threads.smt, false);
  EXPECT_EQ(c->numa.policy, NumaPolicy::kInterleave);
  EXPECT_EQ(c->gpu.id, 1);
  EXPECT_EQ(c->gpu.vram_budget_bytes, 6ull << 30);
  EXPECT_EQ(c->gpu.ram_budget_bytes, 1500000000ull);
  EXPECT_EQ(c->model.context_length, 4096u);
  EXPECT_EQ(c->model.kv_type, KvCacheType::kF32);
  EXPECT_EQ(c->model.kv_type_k, KvCacheType::kQ8_0);
  EXPECT_EQ(c->model.kv_type_v, KvCacheType::kQ4_0);
  EXPECT_EQ(c->model.attention_bf16, true);
  EXPECT_EQ(c->placement.mode, PlacementMode::kDynamic);
  EXPECT_EQ(c->placement.num_gpu_experts, 12u);
  EXPECT_EQ(c->placement.prefill_crossover, 48u);
  ASSERT_EQ(c->placement.expert_overrides.size(), 1u);
  EXPECT_EQ(c->placement.expert_overrides[0], (ExpertOverride{23, 31, DeviceKind::kCpu}));
  ASSERT_EQ(c->placement.tensor_overrides.size(), 1u);
  EXPECT_EQ(c->placement.tensor_overrides[0], (TensorOverride{"blk.*.attn_*.weight", DeviceKind::kGpu}));
  EXPECT_EQ(c->placement.dynamic.decay, 1.0);
  EXPECT_EQ(c->placement.dynamic.replan_interval, 32u);
  EXPECT_EQ(c->placement.dynamic.max_migrations_per_step, 0u);
  EXPECT_EQ(c->placement.dynamic.hysteresis, 0.25);
  EXPECT_EQ(c->trace.output, "run \"1\".json");

  // Round trip: the formatted keys parse back to the same configuration.
  const std::string formatted = format_config(*c);
  auto again = parse_config(formatted, "formatted.toml");
  ASSERT_TRUE(again) << again.error().message << "\n" << formatted;
  EXPECT_EQ(*again, *c) << formatted;
}

TEST(ConfigTest, InlineOverridesRoundTrip) {
  auto c = parse_config(
      "[placement]\noverrides = [{layer = 0, expert = 3, device = \"gpu\"}, {layer = 1, expert = 0, device = "
      "\"cpu\"}]\n",
      "t.toml");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->placement.expert_overrides.size(), 2u);
  EXPECT_EQ(c->placement.expert_overrides[1], (ExpertOverride{1, 0, DeviceKind::kCpu}));
  auto again = parse_config(format_config(*c), "formatted.toml");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(*again, *c);
}

TEST(ConfigTest, ByteSizesAcceptUnitsAndRejectJunk) {
  EXPECT_EQ(*parse_byte_size("512MiB"), 512ull << 20);
  EXPECT_EQ(*parse_byte_size("6gib"), 6ull << 30);
  EXPECT_EQ(*parse_byte_size("1.5GB"), 1500000000ull);
  EXPECT_EQ(*parse_byte_size(" 4096 "), 4096ull);
  EXPECT_EQ(*parse_byte_size("2 KiB"), 2048ull);
  EXPECT_FALSE(parse_byte_size(""));
  EXPECT_FALSE(parse_byte_size("GiB"));
  EXPECT_FALSE(parse_byte_size("1.5"));  // bytes must be whole
  EXPECT_FALSE(parse_byte_size("1."));
  EXPECT_FALSE(parse_byte_size("-1GiB"));
  EXPECT_FALSE(parse_byte_size("2000000TiB"));  // above 2^60
  EXPECT_FALSE(parse_byte_size("6 GiBs"));
}

TEST(ConfigTest, CpuListsParseRangesAndRejectJunk) {
  EXPECT_EQ(*parse_cpu_list("3"), (std::vector<int>{3}));
  EXPECT_EQ(*parse_cpu_list("8-9,0-1"), (std::vector<int>{0, 1, 8, 9}));
  EXPECT_FALSE(parse_cpu_list(""));
  EXPECT_FALSE(parse_cpu_list("0,"));
  EXPECT_FALSE(parse_cpu_list("0-"));
  EXPECT_FALSE(parse_cpu_list("0-3x"));
  EXPECT_FALSE(parse_cpu_list("0-3,2"));
  EXPECT_FALSE(parse_cpu_list("65536"));
  EXPECT_FALSE(parse_cpu_list("99999999999999999999"));
}

/// The default file with its example assignments uncommented: lines "# key = ..." and "# [[...]]" (prose lines
/// never start that way, runtime/app/config.h).
std::string uncommented_default() {
  return std::regex_replace(default_config_text(), std::regex("^# (\\[\\[|[a-z][a-z0-9_]* = )", std::regex::multiline),
                            "$1");
}

TEST(ConfigTest, DefaultFileParsesToTheDefaults) {
  auto c = parse_config(default_config_text(), "default.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(*c, RuntimeConfig{});
}

TEST(ConfigTest, DefaultFileCoversEveryKeyTheParserKnows) {
  const std::string text = uncommented_default();
  auto c = parse_config(text, "uncommented.toml");
  ASSERT_TRUE(c) << c.error().message << "\n" << text;
  // Every field is set by the uncommented examples...
  EXPECT_TRUE(c->threads.count && c->threads.per_node && c->threads.cores && c->threads.smt);
  EXPECT_TRUE(c->numa.policy);
  EXPECT_TRUE(c->gpu.id && c->gpu.vram_budget_bytes && c->gpu.ram_budget_bytes);
  EXPECT_TRUE(c->model.context_length && c->model.kv_type && c->model.kv_type_k && c->model.kv_type_v &&
              c->model.attention_bf16);
  EXPECT_TRUE(c->placement.mode && c->placement.num_gpu_experts && c->placement.prefill_crossover);
  EXPECT_EQ(c->placement.expert_overrides.size(), 1u);
  EXPECT_EQ(c->placement.tensor_overrides.size(), 1u);
  const auto& d = c->placement.dynamic;
  EXPECT_TRUE(d.decay && d.replan_interval && d.max_migrations_per_step && d.hysteresis);
  EXPECT_TRUE(c->trace.output);
  const auto& sv = c->server;
  EXPECT_TRUE(sv.host && sv.port && sv.parallel && sv.n_predict && sv.max_body_bytes && sv.max_queue &&
              sv.timeout_seconds && sv.api_key && sv.alias && sv.cors_origin && sv.prefill_chunk && sv.cache_reuse &&
              sv.cache_prompt);
  // ... and every key path the parser knows has its example line in its table's section.
  for (const std::string& path : config_key_paths()) {
    const size_t dot = path.rfind('.');
    const std::string table = path.substr(0, dot), key = path.substr(dot + 1);
    const bool array = table == "placement.overrides" || table == "placement.tensor_overrides";
    const std::string header = array ? "[[" + table + "]]\n" : "[" + table + "]\n";
    const size_t section = text.find(header);
    ASSERT_NE(section, std::string::npos) << header;
    const size_t next = text.find("\n[", section + header.size());
    const size_t at = text.find("\n" + key + " = ", section);
    EXPECT_TRUE(at != std::string::npos && at < next) << path << " has no example line in " << header;
  }
}

TEST(ConfigTest, UnreadableFileIsAnIoError) {
  auto c = load_config("/nonexistent/hetmoe.toml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kIo);
  EXPECT_NE(c.error().message.find("/nonexistent/hetmoe.toml"), std::string::npos);
}

// ---- the CLI -------------------------------------------------------------------------------------------------------

class ConfigCliTest : public test::CliTest {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    return path.string();
  }
};

TEST_F(ConfigCliTest, PrintDefaultPassesCheck) {
  const auto printed = run("config --print-default");
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  EXPECT_EQ(printed.out, default_config_text());
  const auto checked = run("config --check " + write("default.toml", printed.out));
  EXPECT_EQ(checked.exit_code, 0) << checked.err;
  EXPECT_NE(checked.out.find("sets no key"), std::string::npos) << checked.out;
}

TEST_F(ConfigCliTest, CheckReportsEveryErrorWithExitCode1) {
  const std::string path = write("bad.toml", "[model]\ncontext = 0\n[gpu]\nvram = 1\n");
  const auto r = run("config --check " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(path + ":2:11: model.context: expected an integer in 1..16777216"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(path + ":4:1: unknown key 'gpu.vram'"), std::string::npos) << r.err;
}

TEST_F(ConfigCliTest, GenerateRefusesABadConfigBeforeLoading) {
  const std::string path = write("bad.toml", "[threads]\ncount = \"many\"\n");
  const auto r = run("generate -m /nonexistent.gguf -n 1 --config " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(path + ":2:9: threads.count"), std::string::npos) << r.err;
}

// Flags given on the command line win over the file; the file wins over the built-in defaults. Observed through
// generate's stats line ("N threads") and its context check (a prompt longer than the context is refused).
TEST_F(ConfigCliTest, CommandLineFlagsOverrideTheFile) {
  const std::string model = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";
  ASSERT_TRUE(std::filesystem::exists(model)) << model;
  const std::string path = write("run.toml", "[threads]\ncount = 2\n[model]\ncontext = 8\n");
  const std::string base = "generate -m " + model + " --raw -p \"a b c d e f g h i j\" -n 1 --seed 1 --config " + path;

  const auto from_file = run(base);
  EXPECT_EQ(from_file.exit_code, 1) << "context 8 from the file should refuse the prompt: " << from_file.err;

  const auto overridden = run(base + " -c 256 -t 1");
  ASSERT_EQ(overridden.exit_code, 0) << overridden.err;
  EXPECT_NE(overridden.err.find("| 1 threads"), std::string::npos) << overridden.err;

  const auto threads_from_file = run(base + " -c 256");
  ASSERT_EQ(threads_from_file.exit_code, 0) << threads_from_file.err;
  EXPECT_NE(threads_from_file.err.find("| 2 threads"), std::string::npos) << threads_from_file.err;
}

}  // namespace
}  // namespace hetmoe
