#include <cstdio>

#include "cli/commands.h"
#include "model/inspect.h"

namespace dsv4::cli {

void register_inspect(CLI::App& app) {
  auto* sub = app.add_subcommand("inspect", "Describe a model file: layout, parameters, bytes");
  auto model = std::make_shared<std::string>();
  auto mtp = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  sub->add_option("-m,--model", *model, "GGUF model file")->required();
  sub->add_option("--mtp", *mtp, "MTP GGUF file");
  sub->add_flag("--json", *json, "JSON output");
  sub->callback([=] {
    auto m = load_model(*model, *mtp);
    const ModelSummary s = summarize(*m);
    std::fputs((*json ? summary_json(s) + "\n" : summary_text(s)).c_str(), stdout);
  });
}

}  // namespace dsv4::cli
