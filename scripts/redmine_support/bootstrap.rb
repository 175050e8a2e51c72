# ledgerbridge: bootstrap a Redmine 5.0 instance for syncing time entries (run with `rails runner -e production`).
#
# Idempotent. Enables the REST API, requires login, sets the admin password (no forced change), creates the
# default time-entry activity "Consulting" and the time-entry custom fields the connector reads and writes:
#   Billable (bool, filterable), Approved (bool, filterable), Invoice ref (string, filterable; write-back).
# Prints one JSON line on stdout: {"api_key", "admin_login", "activity_id", "custom_fields": {name: id}}.
#
# Environment: LB_REDMINE_ADMIN_PASSWORD (required).
require 'json'

password = ENV.fetch('LB_REDMINE_ADMIN_PASSWORD')

Setting.rest_api_enabled = '1'
Setting.login_required = '1'

admin = User.find_by_login('admin') or raise 'no admin user: the Redmine database was not loaded with default data'
admin.password = password
admin.password_confirmation = password
admin.must_change_passwd = false
admin.save!
api_key = admin.api_key # creates the key on first read

activity = TimeEntryActivity.where(name: 'Consulting', project_id: nil).first || TimeEntryActivity.new(name: 'Consulting')
activity.active = true
activity.is_default = true
activity.save!

def time_entry_field(name, format, default_value)
  field = TimeEntryCustomField.find_by(name: name) || TimeEntryCustomField.new(name: name)
  field.field_format = format
  field.is_filter = true
  field.is_required = false
  field.visible = true
  field.editable = true
  field.default_value = default_value
  field.save!
  field.id
end

fields = {
  'Billable' => time_entry_field('Billable', 'bool', '1'),
  'Approved' => time_entry_field('Approved', 'bool', '0'),
  'Invoice ref' => time_entry_field('Invoice ref', 'string', nil),
}

puts JSON.generate(
  api_key: api_key,
  admin_login: 'admin',
  activity_id: activity.id,
  custom_fields: fields,
)
