#include "text/chat.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.h"
#include "core/json_text.h"
#include "text/tokenizer.h"

namespace dsv4::text {

namespace {

using ojson = nlohmann::ordered_json;
using std::string_view;

// ---------------------------------------------------------------------------------------------
// Names.

struct TaskInfo {
  Task task;
  string_view name;
  string_view token;
};
constexpr TaskInfo kTasks[] = {
    {Task::kAction, "action", special::kAction},
    {Task::kQuery, "query", special::kQuery},
    {Task::kAuthority, "authority", special::kAuthority},
    {Task::kDomain, "domain", special::kDomain},
    {Task::kTitle, "title", special::kTitle},
    {Task::kReadUrl, "read_url", special::kReadUrl},
};

string_view task_token(Task t) {
  for (const TaskInfo& i : kTasks) {
    if (i.task == t) return i.token;
  }
  fail("task {} has no token", static_cast<int>(t));
}

// Every special-token string a template piece may contain.
constexpr string_view kTemplateSpecials[] = {
    special::kBos,        special::kEos,          special::kUser,      special::kAssistant,
    special::kThinkStart, special::kThinkEnd,     special::kDsml,      special::kLatestReminder,
    special::kAction,     special::kQuery,        special::kAuthority, special::kDomain,
    special::kTitle,      special::kExtractedUrl, special::kReadUrl,
};

// ---------------------------------------------------------------------------------------------
// JSON parsing.

const char* type_of(const ojson& v) {
  return v.type_name();
}

std::string get_string(const ojson& v, const std::string& path) {
  if (!v.is_string()) fail("{}: expected a string, got {}", path, type_of(v));
  return v.get<std::string>();
}

// Optional string: absent or null -> "".
std::string opt_string(const ojson& obj, const char* key, const std::string& path) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return {};
  return get_string(*it, path + "." + key);
}

// Message content: a string, null, or an array of text parts joined by `sep`.
std::string content_text(const ojson& v, const std::string& path, string_view sep) {
  if (v.is_null()) return {};
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) {
    fail("{}: expected a string, null or an array of text parts, got {}", path, type_of(v));
  }
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    const ojson& part = v[i];
    const std::string p = path + "[" + std::to_string(i) + "]";
    if (i > 0) out += sep;
    if (part.is_string()) {
      out += part.get<std::string>();
      continue;
    }
    if (!part.is_object()) fail("{}: expected a content part object, got {}", p, type_of(part));
    const std::string type = opt_string(part, "type", p);
    if (!type.empty() && type != "text") {
      fail("{}.type: unsupported content part type \"{}\" (only \"text\")", p, type);
    }
    const auto t = part.find("text");
    if (t == part.end()) fail("{}.text: missing", p);
    out += get_string(*t, p + ".text");
  }
  return out;
}

Role parse_role(const ojson& m, const std::string& path) {
  const auto it = m.find("role");
  if (it == m.end()) fail("{}.role: missing", path);
  const std::string r = get_string(*it, path + ".role");
  if (r == "system") return Role::kSystem;
  if (r == "user") return Role::kUser;
  if (r == "assistant") return Role::kAssistant;
  if (r == "tool") return Role::kTool;
  if (r == "developer") return Role::kDeveloper;
  if (r == "latest_reminder") return Role::kLatestReminder;
  fail(
      "{}.role: unknown role \"{}\" (expected system, user, assistant, tool, developer or "
      "latest_reminder)",
      path, r);
}

Task parse_task(const ojson& m, const std::string& path) {
  const auto it = m.find("task");
  if (it == m.end() || it->is_null()) return Task::kNone;
  const std::string t = get_string(*it, path + ".task");
  for (const TaskInfo& i : kTasks) {
    if (i.name == t) return i.task;
  }
  fail(
      "{}.task: unknown task \"{}\" (expected action, query, authority, domain, title or "
      "read_url)",
      path, t);
}

Tool parse_tool(const ojson& t, const std::string& path) {
  if (!t.is_object()) fail("{}: expected a tool object, got {}", path, type_of(t));
  const std::string type = opt_string(t, "type", path);
  if (!type.empty() && type != "function") {
    fail("{}.type: unsupported tool type \"{}\" (only \"function\")", path, type);
  }
  const auto f = t.find("function");
  if (f == t.end()) fail("{}.function: missing", path);
  if (!f->is_object()) fail("{}.function: expected an object, got {}", path, type_of(*f));
  const auto n = f->find("name");
  if (n == f->end()) fail("{}.function.name: missing", path);
  Tool tool;
  tool.name = get_string(*n, path + ".function.name");
  if (tool.name.empty()) fail("{}.function.name: empty", path);
  tool.function_json = f->dump();
  return tool;
}

std::vector<Tool> parse_tool_array(const ojson& v, const std::string& path) {
  std::vector<Tool> tools;
  if (v.is_null()) return tools;
  if (!v.is_array()) fail("{}: expected an array of tools, got {}", path, type_of(v));
  for (size_t i = 0; i < v.size(); ++i) {
    tools.push_back(parse_tool(v[i], path + "[" + std::to_string(i) + "]"));
  }
  return tools;
}

ToolCall parse_tool_call(const ojson& c, const std::string& path) {
  if (!c.is_object()) fail("{}: expected a tool call object, got {}", path, type_of(c));
  ToolCall call;
  call.id = opt_string(c, "id", path);
  const std::string type = opt_string(c, "type", path);
  if (!type.empty() && type != "function") {
    fail("{}.type: unsupported tool call type \"{}\" (only \"function\")", path, type);
  }
  const auto f = c.find("function");
  if (f == c.end()) fail("{}.function: missing", path);
  if (!f->is_object()) fail("{}.function: expected an object, got {}", path, type_of(*f));
  const auto n = f->find("name");
  if (n == f->end()) fail("{}.function.name: missing", path);
  call.name = get_string(*n, path + ".function.name");
  if (call.name.empty()) fail("{}.function.name: empty", path);
  const auto a = f->find("arguments");
  if (a == f->end() || a->is_null()) {
    call.arguments = "{}";
  } else if (a->is_string()) {
    call.arguments = a->get<std::string>();
  } else if (a->is_object() || a->is_array()) {
    call.arguments = a->dump();
  } else {
    fail("{}.function.arguments: expected a JSON string (or object), got {}", path, type_of(*a));
  }
  return call;
}

Message parse_message(const ojson& m, const std::string& path) {
  if (!m.is_object()) fail("{}: expected a message object, got {}", path, type_of(m));
  Message msg;
  msg.role = parse_role(m, path);
  const auto c = m.find("content");
  if (c != m.end()) {
    msg.content = content_text(*c, path + ".content", msg.role == Role::kTool ? "\n\n" : "");
  }
  msg.task = parse_task(m, path);
  const bool sys_like = msg.role == Role::kSystem || msg.role == Role::kDeveloper;
  if (const auto t = m.find("tools"); t != m.end() && !t->is_null()) {
    if (!sys_like) {
      fail(
          "{}.tools: tools belong on a system or developer message (or the request), not on "
          "a {} message",
          path, role_name(msg.role));
    }
    msg.tools = parse_tool_array(*t, path + ".tools");
  }
  if (const auto rf = m.find("response_format"); rf != m.end() && !rf->is_null()) {
    if (!sys_like) {
      fail("{}.response_format: only system and developer messages carry a response format", path);
    }
    msg.response_format = rf->dump();
  }
  if (msg.role == Role::kDeveloper && msg.content.empty()) {
    fail("{}.content: a developer message needs non-empty content", path);
  }
  if (msg.role == Role::kAssistant) {
    if (const auto r = m.find("reasoning_content"); r != m.end()) {
      msg.reasoning_content = content_text(*r, path + ".reasoning_content", "");
    }
    if (const auto tc = m.find("tool_calls"); tc != m.end() && !tc->is_null()) {
      if (!tc->is_array()) {
        fail("{}.tool_calls: expected an array, got {}", path, type_of(*tc));
      }
      for (size_t i = 0; i < tc->size(); ++i) {
        msg.tool_calls.push_back(
            parse_tool_call((*tc)[i], path + ".tool_calls[" + std::to_string(i) + "]"));
      }
    }
    if (const auto w = m.find("wo_eos"); w != m.end() && !w->is_null()) {
      if (!w->is_boolean()) fail("{}.wo_eos: expected a boolean, got {}", path, type_of(*w));
      msg.wo_eos = w->get<bool>();
    }
  }
  if (msg.role == Role::kTool) msg.tool_call_id = opt_string(m, "tool_call_id", path);
  return msg;
}

ojson parse_json(string_view text) {
  if (has_nul_byte(text)) fail("invalid JSON: NUL byte at offset {}", nul_byte_offset(text));
  try {
    return ojson::parse(text);
  } catch (const ojson::exception& e) {
    fail("invalid JSON: {}", e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

constexpr string_view kToolsHead =
    "## Tools\n"
    "\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools "
    "by writing a \"<｜DSML｜tool_calls>\" block like the following:\n"
    "\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</"
    "｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n"
    "\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n"
    "\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete "
    "reasoning inside <think>...</think> BEFORE any tool calls or final response.\n"
    "\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n"
    "\n"
    "### Available Tool Schemas\n"
    "\n";
constexpr string_view kToolsTail =
    "\n"
    "\n"
    "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool "
    "calls.\n";
constexpr string_view kResponseFormatHead =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

// One message of the working list: tool messages folded into user turns.
struct Block {
  bool tool = false;
  string_view text;
  string_view call_id;
};
struct Item {
  Role role = Role::kUser;
  const Message* msg = nullptr;  // system/assistant/developer/latest_reminder; null: synthetic
  std::vector<Block> blocks;     // user turns
  std::vector<const Tool*> tools;
  Task task = Task::kNone;
};

class Renderer {
 public:
  explicit Renderer(TextPieces& out) : out_(out) {}
  void tmpl(string_view s) { add(s, false); }
  void data(string_view s) { add(s, true); }

 private:
  void add(string_view s, bool is_data) {
    if (s.empty()) return;
    if (!out_.empty() && out_.back().data == is_data) {
      out_.back().text += s;
    } else {
      out_.push_back({std::string(s), is_data});
    }
  }
  TextPieces& out_;
};

void render_tools(Renderer& r, const std::vector<const Tool*>& tools) {
  r.tmpl(kToolsHead);
  for (size_t i = 0; i < tools.size(); ++i) {
    if (i > 0) r.tmpl("\n");
    try {
      r.data(python_json(tools[i]->function_json));
    } catch (const Error& e) {
      fail("tool \"{}\": {}", tools[i]->name, e.what());
    }
  }
  r.tmpl(kToolsTail);
}

void render_system_extras(Renderer& r, const Item& it) {
  if (!it.tools.empty()) {
    r.tmpl("\n\n");
    render_tools(r, it.tools);
  }
  if (it.msg != nullptr && !it.msg->response_format.empty()) {
    r.tmpl("\n\n");
    r.tmpl(kResponseFormatHead);
    r.data(python_json(it.msg->response_format));
  }
}

std::vector<Item> build_items(const Conversation& conv) {
  std::vector<Item> items;
  size_t first = 0;
  if (!conv.tools.empty()) {
    Item sys;
    sys.role = Role::kSystem;
    if (!conv.messages.empty() && conv.messages[0].role == Role::kSystem) {
      sys.msg = &conv.messages[0];
      sys.task = sys.msg->task;
      for (const Tool& t : sys.msg->tools) sys.tools.push_back(&t);
      first = 1;
    }
    for (const Tool& t : conv.tools) sys.tools.push_back(&t);
    items.push_back(std::move(sys));
  }
  for (size_t i = first; i < conv.messages.size(); ++i) {
    const Message& m = conv.messages[i];
    const bool prev_user = !items.empty() && items.back().role == Role::kUser;
    if (m.role == Role::kTool) {
      const Block b{true, m.content, m.tool_call_id};
      if (prev_user) {
        items.back().blocks.push_back(b);
      } else {
        Item it;
        it.role = Role::kUser;
        it.blocks.push_back(b);
        items.push_back(std::move(it));
      }
    } else if (m.role == Role::kUser) {
      const Block b{false, m.content, {}};
      // As the official merge_tool_messages: the task of a message that joins the turn is lost.
      if (prev_user && items.back().task == Task::kNone) {
        items.back().blocks.push_back(b);
      } else {
        Item it;
        it.role = Role::kUser;
        it.blocks.push_back(b);
        it.task = m.task;
        items.push_back(std::move(it));
      }
    } else {
      Item it;
      it.role = m.role;
      it.msg = &m;
      it.task = m.task;
      for (const Tool& t : m.tools) it.tools.push_back(&t);
      items.push_back(std::move(it));
    }
  }
  // Tool results in the order of the latest assistant message's calls (ids it does not know
  // sort as its first call; the sort is stable).
  std::map<string_view, size_t> order;
  for (Item& it : items) {
    if (it.role == Role::kAssistant && !it.msg->tool_calls.empty()) {
      order.clear();
      for (size_t k = 0; k < it.msg->tool_calls.size(); ++k) {
        const std::string& id = it.msg->tool_calls[k].id;
        if (!id.empty()) order[id] = k;
      }
    } else if (it.role == Role::kUser && !order.empty()) {
      std::vector<Block> results;
      for (const Block& b : it.blocks) {
        if (b.tool) results.push_back(b);
      }
      if (results.size() < 2) continue;
      std::stable_sort(results.begin(), results.end(), [&](const Block& a, const Block& b) {
        const auto ia = order.find(a.call_id), ib = order.find(b.call_id);
        return (ia == order.end() ? 0 : ia->second) < (ib == order.end() ? 0 : ib->second);
      });
      size_t k = 0;
      for (Block& b : it.blocks) {
        if (b.tool) b = results[k++];
      }
    }
  }
  return items;
}

ptrdiff_t last_user_index(const std::vector<Item>& items) {
  for (size_t i = items.size(); i-- > 0;) {
    if (items[i].role == Role::kUser || items[i].role == Role::kDeveloper) {
      return static_cast<ptrdiff_t>(i);
    }
  }
  return -1;
}

}  // namespace

const std::string_view kReasoningEffortMaxPrefix =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is "
    "left unchecked.\n\n";

std::string_view role_name(Role r) {
  switch (r) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
    case Role::kTool:
      return "tool";
    case Role::kDeveloper:
      return "developer";
    case Role::kLatestReminder:
      return "latest_reminder";
  }
  return "?";
}

std::string_view task_name(Task t) {
  for (const TaskInfo& i : kTasks) {
    if (i.task == t) return i.name;
  }
  return "none";
}

ThinkingMode parse_thinking_mode(std::string_view s) {
  if (s == "chat") return ThinkingMode::kChat;
  if (s == "thinking") return ThinkingMode::kThinking;
  fail("unknown thinking mode \"{}\" (expected chat or thinking)", s);
}

ReasoningEffort parse_reasoning_effort(std::string_view s) {
  if (s == "none") return ReasoningEffort::kNone;
  if (s == "high") return ReasoningEffort::kHigh;
  if (s == "max") return ReasoningEffort::kMax;
  fail("unknown reasoning effort \"{}\" (expected max, high or none)", s);
}

Prompt render(const Conversation& conv, const RenderOptions& opt) {
  std::vector<Item> items = build_items(conv);
  const bool thinking = opt.mode == ThinkingMode::kThinking;
  const bool any_tools =
      std::any_of(items.begin(), items.end(), [](const Item& it) { return !it.tools.empty(); });
  const bool drop = opt.drop_thinking && !any_tools;
  if (thinking && drop) {
    // Before the last user turn: assistant turns lose their reasoning (below, by index) and
    // developer messages go.
    const ptrdiff_t lu = last_user_index(items);
    std::vector<Item> kept;
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].role == Role::kDeveloper && static_cast<ptrdiff_t>(i) < lu) continue;
      kept.push_back(std::move(items[i]));
    }
    items = std::move(kept);
  }
  const ptrdiff_t last_user = last_user_index(items);

  Prompt p;
  Renderer r(p.pieces);
  r.tmpl(special::kBos);
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    const auto idx = static_cast<ptrdiff_t>(i);
    if (i == 0 && thinking && opt.effort == ReasoningEffort::kMax) {
      r.tmpl(kReasoningEffortMaxPrefix);
    }
    switch (it.role) {
      case Role::kSystem:
        if (it.msg != nullptr) r.data(it.msg->content);
        render_system_extras(r, it);
        break;
      case Role::kDeveloper:
        if (it.msg->content.empty()) fail("message {}: developer content is empty", i);
        r.tmpl(special::kUser);
        r.data(it.msg->content);
        render_system_extras(r, it);
        break;
      case Role::kUser:
        r.tmpl(special::kUser);
        for (size_t b = 0; b < it.blocks.size(); ++b) {
          if (b > 0) r.tmpl("\n\n");
          if (it.blocks[b].tool) {
            r.tmpl("<tool_result>");
            r.data(it.blocks[b].text);
            r.tmpl("</tool_result>");
          } else {
            r.data(it.blocks[b].text);
          }
        }
        break;
      case Role::kLatestReminder:
        r.tmpl(special::kLatestReminder);
        r.data(it.msg->content);
        break;
      case Role::kAssistant: {
        const bool prev_task = i > 0 && items[i - 1].task != Task::kNone;
        if (thinking && !prev_task && (!drop || idx > last_user)) {
          r.data(it.msg->reasoning_content);
          r.tmpl(special::kThinkEnd);
        }
        r.data(it.msg->content);
        std::optional<std::string> replay;
        if (opt.replay_tool_calls && !it.msg->tool_calls.empty()) {
          replay = opt.replay_tool_calls(it.msg->tool_calls);
        }
        if (replay) {
          r.tmpl(*replay);
        } else {
          append_tool_calls_dsml(it.msg->tool_calls, p.pieces);
        }
        if (!it.msg->wo_eos) r.tmpl(special::kEos);
        break;
      }
      case Role::kTool:
        fail("internal: unfolded tool message");
    }
    // Transition to the next turn.
    if (i + 1 < items.size() && items[i + 1].role != Role::kAssistant &&
        items[i + 1].role != Role::kLatestReminder) {
      continue;
    }
    if (it.task != Task::kNone) {
      if (it.task == Task::kAction) {
        r.tmpl(special::kAssistant);
        r.tmpl(thinking ? special::kThinkStart : special::kThinkEnd);
      }
      r.tmpl(task_token(it.task));
    } else if (it.role == Role::kUser || it.role == Role::kDeveloper) {
      r.tmpl(special::kAssistant);
      r.tmpl(thinking && (!drop || idx >= last_user) ? special::kThinkStart : special::kThinkEnd);
    }
  }
  return p;
}

std::string render_text(const Conversation& conv, const RenderOptions& opt) {
  return render(conv, opt).text();
}

std::string Prompt::text() const {
  std::string s;
  size_t n = 0;
  for (const TextPiece& p : pieces) n += p.text.size();
  s.reserve(n);
  for (const TextPiece& p : pieces) s += p.text;
  return s;
}

std::vector<int32_t> Prompt::tokens(const Tokenizer& tok) const {
  std::vector<int32_t> ids;
  std::string run;
  auto flush = [&] {
    if (!run.empty()) tok.encode_text(run, ids);
    run.clear();
  };
  for (const TextPiece& p : pieces) {
    if (p.data) {
      run += p.text;
      continue;
    }
    const string_view t = p.text;
    for (size_t i = 0; i < t.size();) {
      string_view best;
      const char c = t[i];
      if (c == '<' || static_cast<unsigned char>(c) == 0xEF) {  // '<' or the first byte of ｜
        for (string_view sp : kTemplateSpecials) {
          if (sp.size() > best.size() && t.substr(i, sp.size()) == sp) best = sp;
        }
      }
      if (best.empty()) {
        run += c;
        ++i;
        continue;
      }
      flush();
      ids.push_back(tok.special_id(best));
      i += best.size();
    }
  }
  flush();
  return ids;
}

// ---------------------------------------------------------------------------------------------

Conversation parse_conversation(std::string_view json_text) {
  const ojson j = parse_json(json_text);
  Conversation conv;
  const ojson* msgs = nullptr;
  std::string base;
  if (j.is_array()) {
    msgs = &j;
  } else if (j.is_object()) {
    const auto m = j.find("messages");
    if (m == j.end()) fail("messages: missing");
    msgs = &*m;
    if (!msgs->is_array()) fail("messages: expected an array, got {}", type_of(*msgs));
    if (const auto t = j.find("tools"); t != j.end()) conv.tools = parse_tool_array(*t, "tools");
  } else {
    fail("expected a JSON array of messages or an object with \"messages\", got {}", type_of(j));
  }
  for (size_t i = 0; i < msgs->size(); ++i) {
    conv.messages.push_back(parse_message((*msgs)[i], "messages[" + std::to_string(i) + "]"));
  }
  return conv;
}

std::vector<Tool> parse_tools(std::string_view json_text) {
  const ojson j = parse_json(json_text);
  if (j.is_object()) {
    const auto t = j.find("tools");
    if (t == j.end()) fail("tools: missing");
    return parse_tool_array(*t, "tools");
  }
  return parse_tool_array(j, "tools");
}

}  // namespace dsv4::text
