# ledgerbridge: bulk-create time entries for benchmarks (run by `scripts/redmine seed`; rails runner).
# Env: LB_SEED_PROJECT (id or identifier), LB_SEED_ENTRIES (count), LB_SEED_SPENT_ON (optional YYYY-MM-DD: all
# entries on that day, i.e. many ties; default: spread over the last LB_SEED_DAYS days, default 90). Prints {"created": N, "ids": [first, last]}.
require 'json'

project = Project.find(ENV.fetch('LB_SEED_PROJECT'))
count = Integer(ENV.fetch('LB_SEED_ENTRIES'))
day = ENV['LB_SEED_SPENT_ON'].to_s.empty? ? nil : Date.parse(ENV['LB_SEED_SPENT_ON'])
days = Integer(ENV.fetch('LB_SEED_DAYS', '90'))
user = User.find_by_login('admin')
activity = TimeEntryActivity.default || TimeEntryActivity.active.first
ids = []
TimeEntry.transaction do
  count.times do |i|
    e = TimeEntry.new(project: project, user: user, author: user, activity: activity,
                      hours: ((i % 16) + 1) * 0.25, spent_on: day || (Date.today - (i % days)),
                      comments: "seed #{i}")
    e.save!
    ids << e.id
  end
end
puts JSON.generate(created: ids.size, ids: [ids.first, ids.last])
