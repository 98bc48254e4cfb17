#include "cluster_operation.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "slots.hpp"
#include "stats.hpp"

namespace rsh {
namespace {

bool starts_with(const std::string& text, std::string_view prefix) {
    return text.compare(0, prefix.size(), prefix) == 0;
}

// Appends to `into` a spare element (emptied, its buffers kept), else a new one.
template <class T>
T& reuse_or_add(std::vector<T>& into, std::vector<T>& spares) {
    if (spares.empty()) return into.emplace_back();
    into.push_back(std::move(spares.back()));
    spares.pop_back();
    return into.back();
}

}  // namespace

// Empties phases_ into the spares: each group reset, its
// parts emptied into spare_parts_, each phase vector kept with its capacity.
void ClusterOperation::recycle_phases() {
    auto recycle_group = [this](Group& group) {
        for (Part& part : group.parts) {
            part.key.clear();
            part.commands.clear();
            spare_parts_.push_back(std::move(part));
        }
        group.parts.clear();
        group.count = 0;
        group.ask.reset();
        group.slot = 0;
        group.done = false;
        group.pending_send = true;
        group.connection_failures = 0;
        spare_groups_.push_back(std::move(group));
    };
    for (auto& groups : phases_) {
        for (Group& group : groups) recycle_group(group);
        groups.clear();
        spare_phases_.push_back(std::move(groups));
    }
    phases_.clear();
    merged_tail_ = 0;
}

void ClusterOperation::recycle_batches() {
    for (NodeBatch& batch : batches_) {
        batch.commands.clear();
        batch.groups.clear();
        batch.probe = false;
        spare_batches_.push_back(std::move(batch));
    }
    batches_.clear();
}

void ClusterOperation::add(std::size_t phase, std::string_view key, int slot,
                           std::initializer_list<std::string_view> args) {
    while (phases_.size() <= phase) reuse_or_add(phases_, spare_phases_);
    auto& groups = phases_[phase];
    auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.slot == slot; });
    Group& group = it != groups.end() ? *it : reuse_or_add(groups, spare_groups_);
    group.slot = slot;
    ++group.count;
    if (group.parts.empty() || group.parts.back().key != key) reuse_or_add(group.parts, spare_parts_).key.assign(key);
    if (!marking_.empty()) group.parts.back().commands.mark(marking_);
    group.parts.back().commands.add(args);
}

// Replaces group index (of the current phase) by one group per key.
bool ClusterOperation::split_by_key(std::size_t index) {
    if (merged_tail_ > 0 && phase_ == 0) {
        // A one-slot call split up: its add and remove phases come back apart.
        Group& tail = reuse_or_add(reuse_or_add(phases_, spare_phases_), spare_groups_);
        Group& whole = phases_[0][index];
        tail.slot = whole.slot;
        const std::size_t first_tail = whole.parts.size() - merged_tail_;
        for (std::size_t i = first_tail; i < whole.parts.size(); ++i) {
            tail.count += whole.parts[i].commands.count();
            tail.parts.push_back(std::move(whole.parts[i]));
        }
        whole.parts.resize(first_tail);
        whole.count -= tail.count;
        merged_tail_ = 0;
    }
    auto& groups = phases_[phase_];
    Group whole = std::move(groups[index]);
    std::vector<Group> by_key;
    for (auto& part : whole.parts) {
        auto it = std::find_if(by_key.begin(), by_key.end(),
                               [&](const Group& g) { return g.parts.front().key == part.key; });
        if (it == by_key.end()) {
            by_key.emplace_back();
            it = by_key.end() - 1;
            it->slot = whole.slot;
            it->connection_failures = whole.connection_failures;
        }
        it->count += part.commands.count();
        it->parts.push_back(std::move(part));
    }
    groups[index] = std::move(by_key.front());
    for (std::size_t i = 1; i < by_key.size(); ++i) groups.push_back(std::move(by_key[i]));
    return by_key.size() > 1;
}

void ClusterOperation::start(const Operation& loaded, const KeyNaming& naming,
                             std::shared_ptr<ClusterTopology> topology, ClusterPolicy policy) {
    loaded_ = &loaded;
    naming_ = &naming;
    topology_ = std::move(topology);
    policy_ = policy;
    rounds_ = 0;
    build();
}

void ClusterOperation::build() {
    const Operation& loaded = *loaded_;
    const KeyNaming& naming = *naming_;
    // Redis < 7.0 (no CLUSTER SHARDS, no EXPIRE NX/GT/LT): the same guarantees by script
    built_for_redis7_ = topology_->use_shards();
    rebuild_ = false;
    recycle_phases();
    phase_ = 0;
    recycle_batches();
    to_split_.clear();
    split_ = false;
    redirections_ = 0;
    refresh_ = false;
    backoffs_ = 0;
    backoff_ = false;
    last_retry_error_.clear();
    retrying_ = false;
    finished_ = false;
    result_.kind = Result::Kind::Ok;
    result_.text.clear();
    result_.version = 0;  // (the map keeps its pairs for the next read_metadata: see read_score_map)
    answer_ = Answer::Ok;

    if (const SetArgs* set = loaded.set_args()) {
        const NumberText ttl(static_cast<double>(set->ttl));
        naming.session_key_into(key_, set->name, set->key);
        int slot = key_slot(key_);  // (once per key: every command of the key is in its slot)
        // the node batch that carries a large value marks where (Operation::value_offset)
        if (set->value.size() >= Operation::kSeparateValue) marking_ = set->value;
        add(0, key_, slot, {"SET", key_, set->value, "EX", ttl.view()});
        marking_ = {};
        if (set->metadata) {
            const NumberText score(set->current_time - 1);
            const NumberText new_score(set->current_time + static_cast<double>(set->ttl));
            for (const auto& [audience, subject] : set->metadata->entries) {
                naming.metadata_key_into(meta_key_, set->name, audience, subject);
                slot = key_slot(meta_key_);
                add(0, meta_key_, slot, {"ZREMRANGEBYSCORE", meta_key_, "0", score.view()});
                add(0, meta_key_, slot, {"ZADD", meta_key_, new_score.view(), set->key});
                // Never shorten the zset's life: a short session must not expire long ones.
                ttl_script::add_extend([&](std::initializer_list<std::string_view> args) { add(0, meta_key_, slot, args); },
                                       meta_key_, ttl.view(), built_for_redis7_);
            }
        }
        if (set->old_key) {
            const NumberText stale(static_cast<double>(set->stale_ttl));
            naming.session_key_into(key_, set->name, *set->old_key);
            slot = key_slot(key_);
            ttl_script::add_shorten([&](std::initializer_list<std::string_view> args) { add(1, key_, slot, args); },
                                    key_, stale.view(), built_for_redis7_);
            if (set->metadata) {
                for (const auto& [audience, subject] : set->metadata->entries) {
                    naming.metadata_key_into(meta_key_, set->name, audience, subject);
                    add(1, meta_key_, key_slot(meta_key_), {"ZREM", meta_key_, *set->old_key});
                }
            }
        }
    } else if (const GetArgs* get = loaded.get_args()) {
        naming.session_key_into(key_, get->name, get->key);
        add(0, key_, key_slot(key_), {"GET", key_});
        answer_ = Answer::Value;
    } else if (const DeleteArgs* del = loaded.delete_args()) {
        naming.session_key_into(key_, del->name, del->key);
        add(0, key_, key_slot(key_), {"UNLINK", key_});
        if (del->metadata) {
            const NumberText score(del->current_time - 1);
            for (const auto& [audience, subject] : del->metadata->entries) {
                naming.metadata_key_into(meta_key_, del->name, audience, subject);
                const int slot = key_slot(meta_key_);
                add(1, meta_key_, slot, {"ZREMRANGEBYSCORE", meta_key_, "0", score.view()});
                add(1, meta_key_, slot, {"ZREM", meta_key_, del->key});
            }
        }
    } else if (const ReadMetadataArgs* read = loaded.read_metadata_args()) {
        naming.metadata_key_into(meta_key_, read->name, read->audience, read->subject);
        add(0, meta_key_, key_slot(meta_key_), {"ZRANGEBYSCORE", meta_key_, NumberText(read->current_time).view(), "+inf", "WITHSCORES"});
        answer_ = Answer::Value;
    }

    // One slot for everything: one phase, one transaction (the atomic option).
    merged_tail_ = 0;
    if (phases_.size() == 2 && phases_[0].size() == 1 && phases_[1].size() == 1 &&
        phases_[0][0].slot == phases_[1][0].slot) {
        Group& whole = phases_[0][0];
        Group& tail = phases_[1][0];
        merged_tail_ = tail.parts.size();  // split_by_key takes them back out
        whole.count += tail.count;
        for (Part& part : tail.parts) whole.parts.push_back(std::move(part));
        tail.parts.clear();
        tail.count = 0;
        spare_groups_.push_back(std::move(tail));
        phases_[1].clear();
        spare_phases_.push_back(std::move(phases_[1]));
        phases_.pop_back();
    }
}

bool ClusterOperation::plan_round() {
    // The first call on a cluster is built before its slot map is loaded: when
    // that load found a cluster older than Redis 7.0, build again before sending.
    if (rounds_++ == 0 && !finished_ && built_for_redis7_ != topology_->use_shards()) build();
    recycle_batches();
    if (finished_) return false;
    auto map = topology_->map();
    auto& groups = phases_[phase_];
    for (std::size_t i = 0; i < groups.size(); ++i) {
        Group& group = groups[i];
        if (group.done) continue;
        const NodeAddress* node = group.ask ? &*group.ask : map->node_for(group.slot);
        if (!node) {
            // No node serves the slot (yet): as CLUSTERDOWN, after a refresh.
            group.pending_send = false;
            refresh_ = true;
            backoff_ = true;
            will_retry("CLUSTERDOWN no known node serves slot " + std::to_string(group.slot));
            continue;
        }
        auto batch = std::find_if(batches_.begin(), batches_.end(), [&](const NodeBatch& b) { return b.node == *node; });
        if (batch == batches_.end()) {
            reuse_or_add(batches_, spare_batches_).node = *node;
            batch = batches_.end() - 1;
        }
        if (group.ask) batch->commands.add({"ASKING"});
        const bool multi = group.count > 1;
        if (multi) batch->commands.add({"MULTI"});
        for (const Part& part : group.parts) batch->commands.append(part.commands);
        if (multi) batch->commands.add({"EXEC"});
        batch->groups.push_back(i);
        group.pending_send = true;
    }
    for (NodeBatch& batch : batches_) {
        if (topology_->suspected(batch.node)) {
            batch.probe = true;
            batch.commands.clear();
            batch.commands.add({"PING"});
        } else if (waits()) {
            add_wait(batch.commands, policy_.durability);
        }
    }
    return true;
}

void ClusterOperation::probe_answered(const NodeBatch& batch, const Reply& reply) {
    auto& groups = phases_[phase_];
    for (std::size_t index : batch.groups) groups[index].pending_send = false;
    if (reply.is_error()) {  // LOADING, MASTERDOWN...: not ready yet
        will_retry(reply.str);
        refresh_ = true;
        backoff_ = true;
        return;
    }
    topology_->cleared(batch.node);  // the groups go next round
}

ClusterOperation::Verdict ClusterOperation::redirect(Group& group, const std::string& error) {
    const bool moved = starts_with(error, "MOVED ");
    const bool ask = starts_with(error, "ASK ");
    if (moved || ask) {
        if (++redirections_ > policy_.max_redirections) {
            fail("too many cluster redirections (last: " + error + ")");
            return Verdict::Failed;
        }
        // "MOVED <slot> <host>:<port>"
        const auto space = error.find(' ', moved ? 6 : 4);
        const NodeAddress asked = group.ask ? *group.ask : NodeAddress{};
        std::optional<NodeAddress> target;
        if (space != std::string::npos) target = parse_node_address(std::string_view(error).substr(space + 1), asked);
        if (!target) {
            fail("protocol error: unexpected redirection: " + error);
            return Verdict::Failed;
        }
        will_retry(error);
        stats::bump(moved ? stats::Counter::ClusterMoved : stats::Counter::ClusterAsk);
        if (moved) {
            group.ask.reset();
            topology_->patch(group.slot, *target);
        } else if (!group.ask && std::any_of(group.parts.begin(), group.parts.end(),
                                               [&](const Part& p) { return p.key != group.parts.front().key; })) {
            split_ = true;  // per key, to the source again (see the header)
        } else {
            group.ask = *target;  // this call only: the map keeps the slot's owner
        }
        return Verdict::Retry;
    }
    if (built_for_redis7_ && starts_with(error, "ERR wrong number of arguments for 'expire'")) {
        // A master older than Redis 7.0 behind a CLUSTER SHARDS that answered (a
        // cluster being upgraded): nothing ran (the transaction was refused at queue
        // time); the whole call again, in the script forms from now on.
        topology_->shards_unsupported();
        will_retry(error);
        rebuild_ = true;
        return Verdict::Retry;
    }
    if (starts_with(error, "TRYAGAIN") || starts_with(error, "CLUSTERDOWN") || starts_with(error, "LOADING")) {
        will_retry(error);
        group.ask.reset();
        backoff_ = true;
        if (starts_with(error, "CLUSTERDOWN")) refresh_ = true;
        return Verdict::Retry;
    }
    fail(error);
    return Verdict::Failed;
}

void ClusterOperation::take_value(Reply& reply) {
    if (answer_ != Answer::Value) return;
    if (reply.type == Reply::Type::Nil) {
        result_.kind = Result::Kind::Nil;
    } else if (reply.type == Reply::Type::String) {
        result_.kind = Result::Kind::String;
        result_.text.swap(reply.str);
    } else if (reply.type == Reply::Type::Array && reply.elements.size() % 2 == 0) {
        if (!read_score_map(reply, result_.map)) return fail("unexpected reply to ZRANGEBYSCORE");
        result_.kind = Result::Kind::Map;
    } else {
        fail("unexpected reply");
    }
}

// Reads one group's replies from replies[at...] (advancing at).
ClusterOperation::Verdict ClusterOperation::judge(Group& group, std::vector<ReplyPtr>& replies, std::size_t& at) {
    const bool multi = group.count > 1;
    const std::size_t count = (group.ask ? 1 : 0) + group.count + (multi ? 2 : 0);
    const std::size_t first = at;
    at += count;
    if (group.ask) {
        const Reply& asking = *replies[first];
        if (asking.is_error()) return redirect(group, asking.str);
    }
    const std::size_t body = first + (group.ask ? 1 : 0);
    if (!multi) {
        Reply& reply = *replies[body];
        if (reply.is_error()) return redirect(group, reply.str);
        take_value(reply);
        return finished_ ? Verdict::Failed : Verdict::Done;
    }
    // MULTI, QUEUED x n, EXEC: a redirection at queue time aborts the transaction
    // (EXECABORT): nothing ran, the whole group goes again.
    for (std::size_t i = body; i < body + count - (group.ask ? 1 : 0) - 1; ++i) {
        if (replies[i]->is_error()) return redirect(group, replies[i]->str);
    }
    Reply& exec = *replies[at - 1];
    if (exec.is_error()) return redirect(group, exec.str);
    if (exec.type == Reply::Type::Nil) {
        fail("transaction aborted");
        return Verdict::Failed;
    }
    if (exec.type != Reply::Type::Array) {
        fail("unexpected reply to EXEC");
        return Verdict::Failed;
    }
    for (const auto& element : exec.elements) {
        if (element && element->is_error()) {
            fail(element->str);
            return Verdict::Failed;
        }
    }
    if (answer_ == Answer::Value && !exec.elements.empty()) take_value(*exec.elements.back());
    return finished_ ? Verdict::Failed : Verdict::Done;
}

void ClusterOperation::node_replies(std::size_t batch, std::vector<ReplyPtr>& replies) {
    if (finished_) return;
    if (replies.size() != batches_[batch].commands.count()) {
        return fail("protocol error: " + std::to_string(replies.size()) + " replies for " +
                    std::to_string(batches_[batch].commands.count()) + " commands");
    }
    if (batches_[batch].probe) return probe_answered(batches_[batch], *replies.front());
    auto& groups = phases_[phase_];
    std::size_t at = 0;
    bool wrote = false;
    for (std::size_t index : batches_[batch].groups) {
        Group& group = groups[index];
        group.pending_send = false;
        const Verdict verdict = judge(group, replies, at);
        if (verdict == Verdict::Failed) return;
        if (verdict == Verdict::Done) {
            group.done = true;
            group.ask.reset();
            wrote = true;
        }
        if (split_) {
            split_ = false;
            to_split_.push_back(index);
        }
    }
    // The batch's last reply is its WAIT: what this node applied may not be on
    // its replicas, so the call is not acknowledged (groups redirected elsewhere
    // wait on their own node).
    if (wrote && waits()) {
        if (auto shortfall = wait_shortfall(*replies.back(), policy_.durability)) fail(std::move(*shortfall));
    }
}

void ClusterOperation::node_failed(std::size_t batch, const std::string& error, bool retryable) {
    if (finished_) return;
    topology_->suspect(batches_[batch].node);
    auto& groups = phases_[phase_];
    for (std::size_t index : batches_[batch].groups) {
        Group& group = groups[index];
        group.pending_send = false;
        if (!retryable || ++group.connection_failures >= policy_.max_connection_attempts) {
            return fail(error);
        }
        group.ask.reset();
    }
    will_retry(error);
    refresh_ = true;
    backoff_ = true;
}

RoundOutcome ClusterOperation::end_round() {
    RoundOutcome outcome;
    recycle_batches();
    if (rebuild_ && !finished_) {
        rebuild_ = false;
        stats::bump(stats::Counter::ClusterRetries);
        build();  // every command is idempotent: groups done already go again
        return outcome;
    }
    if (!finished_) {
        std::sort(to_split_.rbegin(), to_split_.rend());  // later indexes first: appends keep earlier ones
        for (std::size_t index : to_split_) split_by_key(index);
    }
    to_split_.clear();
    if (!finished_) {
        const auto& groups = phases_[phase_];
        const bool all_done = std::all_of(groups.begin(), groups.end(), [](const Group& g) { return g.done; });
        if (all_done && ++phase_ == phases_.size()) {
            finished_ = true;
            if (result_.kind == Result::Kind::Ok && answer_ == Answer::Value) result_.kind = Result::Kind::Nil;
        }
    }
    outcome.finished = finished_;
    if (!finished_) {
        if (retrying_) stats::bump(stats::Counter::ClusterRetries);
        outcome.refresh = refresh_;
        if (backoff_) {
            // 10, 20, 40 ... 320 ms: the driver stops at the call's retry budget.
            outcome.backoff_ms = 10 << std::min(backoffs_, 5);
            ++backoffs_;
        }
    }
    refresh_ = false;
    backoff_ = false;
    retrying_ = false;
    return outcome;
}

void ClusterOperation::will_retry(const std::string& error) {
    last_retry_error_ = error;
    retrying_ = true;
}

void ClusterOperation::fail(std::string err) {
    result_ = Result::error(std::move(err));
    finished_ = true;
}

void ClusterOperation::trim() noexcept {
    // start() recycles the groups, parts and batches; only oversized buffers go
    // (a large value's commands), as in Operation::trim.
    auto trim_group = [](Group& group) noexcept {
        for (Part& part : group.parts) part.commands.trim(Operation::kKeep);
    };
    for (auto& groups : phases_) {
        for (Group& group : groups) trim_group(group);
    }
    for (NodeBatch& batch : batches_) batch.commands.trim(Operation::kKeep);
    if (result_.text.capacity() > Operation::kKeep) std::string().swap(result_.text);
    if (result_.map.capacity() > kKeepMapPairs) decltype(result_.map)().swap(result_.map);
}

}  // namespace rsh
