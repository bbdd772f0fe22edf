// Runs once, when the mongodb volume is empty (docker-entrypoint-initdb.d), as the root user.
// Creates the least-privilege application user Airflow connects with (connection mongo_default):
// read/write and index management on database `musicrec`, nothing else.
const user = process.env.MUSICREC_MONGO_USER;
const pwd = process.env.MUSICREC_MONGO_PASSWORD;
if (!user || !pwd) {
  throw new Error("MUSICREC_MONGO_USER and MUSICREC_MONGO_PASSWORD must be set");
}
const admin = db.getSiblingDB("admin");
const roles = [
  { role: "readWrite", db: "musicrec" },
  { role: "dbAdmin", db: "musicrec" },
];
if (admin.getUser(user) === null) {
  admin.createUser({ user: user, pwd: pwd, roles: roles });
  print(`musicrec: created user ${user}`);
} else {
  admin.updateUser(user, { pwd: pwd, roles: roles });
  print(`musicrec: updated user ${user}`);
}
